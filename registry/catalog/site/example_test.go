package site_test

import (
	"fmt"

	"github.com/kfm-project/kfm/registry/catalog/site"
)

// Raw HTML in a readme is dropped.
func ExampleRenderMarkdown() {
	html, _ := site.RenderMarkdown([]byte("**Fast** <script>alert(1)</script>"))
	fmt.Print(html)
	// Output: <p><strong>Fast</strong> <!-- raw HTML omitted -->alert(1)<!-- raw HTML omitted --></p>
}
