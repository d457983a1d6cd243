package pinmeta

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecode: a metadata pin is a BPF map anyone with access to the bpffs
// can rewrite (or a crash can leave half-written), and every later kfm run
// reads it. Any value decodes or is refused, naming the pin, without a
// panic; a decoded document written back with encode decodes to the same.
func FuzzDecode(f *testing.F) {
	f.Add(encode([]byte(`{"version":1,"names":["a","b"],"x":{"y":[1,2.5,null]}}`)))
	f.Add(encode([]byte(`null`)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, '{', '}'})
	f.Add([]byte{2, 0, 0})
	const path = "/sys/fs/bpf/kfm/fuzz/meta"
	f.Fuzz(func(t *testing.T, val []byte) {
		var v any
		if err := decode(path, val, &v); err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the pin: %v", err)
			}
			return
		}
		doc, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("decoded document does not marshal: %v", err)
		}
		var again any
		if err := decode(path, encode(doc), &again); err != nil {
			t.Fatalf("re-encoded document does not decode: %v", err)
		}
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("document changed: %#v -> %#v", v, again)
		}
	})
}
