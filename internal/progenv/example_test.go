package progenv_test

import (
	"fmt"
	"os"

	"github.com/kfm-project/kfm/internal/progenv"
)

// A program runs its steps, turns a Fatal into a message and always cleans
// up, in reverse order.
func Example() {
	dir, _ := os.MkdirTemp("", "progenv-")
	e := progenv.New("example", dir)
	e.Cleanup(func() { os.RemoveAll(dir); fmt.Println("removed the directory") })
	func() {
		defer func() {
			if f, ok := recover().(progenv.Failure); ok {
				fmt.Println("failed:", f.Msg)
			}
			e.Close()
		}()
		e.Cleanup(func() { fmt.Println("undid step 1") })
		e.Fatalf("step %d went wrong", 2)
	}()
	// Output:
	// failed: step 2 went wrong
	// undid step 1
	// removed the directory
}
