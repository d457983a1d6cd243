package tc

// UnsupportedForTest wraps a probe error as Supports does.
func UnsupportedForTest(err error) error { return unsupported{err} }
