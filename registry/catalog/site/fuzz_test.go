package site_test

import (
	"io"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/kfm-project/kfm/registry/catalog/site"
)

// The elements and attributes goldmark (GFM, no raw HTML) writes; anything
// else in the output came from the readme.
var (
	safeElements = map[string]bool{
		"p": true, "h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
		"a": true, "img": true, "code": true, "pre": true, "em": true, "strong": true, "del": true,
		"ul": true, "ol": true, "li": true, "blockquote": true, "hr": true, "br": true, "input": true,
		"table": true, "thead": true, "tbody": true, "tr": true, "th": true, "td": true,
	}
	safeAttrs = map[string]bool{
		"href": true, "src": true, "alt": true, "title": true, "id": true, "class": true,
		"align": true, "style": true, "start": true, "type": true, "checked": true, "disabled": true,
	}
)

// FuzzRenderMarkdown: a publisher's readme becomes HTML on the catalog
// site. Whatever it holds, the output has only the elements and attributes
// markdown itself makes, no event handler, and no link or image to a
// javascript:, vbscript: or data:text/html URL.
func FuzzRenderMarkdown(f *testing.F) {
	for _, s := range []string{
		"# Title\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n- [x] done\n- [ ] not\n\n1. one\n\n> quote\n\n```c\nint x;\n```\n",
		"[click](javascript:alert(1)) ![i](data:text/html;base64,PHNjcmlwdD4=) <script>x</script>",
		"<a href=\"javascript:alert(1)\">x</a> <img src=x onerror=alert(1)> www.example.com https://x.example/?a=<b>",
		"[a]: jAvAsCrIpT&#58;alert(1)\n\n[x][a] [y](<java\nscript:1>) [z](&#x6A;avascript:1)",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		out, err := site.RenderMarkdown(src)
		if err != nil {
			return
		}
		z := html.NewTokenizer(strings.NewReader(string(out)))
		for {
			tt := z.Next()
			if tt == html.ErrorToken {
				if z.Err() != io.EOF {
					t.Fatalf("output does not tokenize: %v", z.Err())
				}
				return
			}
			if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
				continue
			}
			tok := z.Token()
			if !safeElements[tok.Data] {
				t.Fatalf("readme %q made element <%s> in\n%s", src, tok.Data, out)
			}
			for _, a := range tok.Attr {
				if !safeAttrs[a.Key] {
					t.Fatalf("readme %q made attribute %s on <%s> in\n%s", src, a.Key, tok.Data, out)
				}
				if a.Key != "href" && a.Key != "src" {
					continue
				}
				// Browsers drop tabs and newlines from URLs and ignore
				// case in schemes.
				u := strings.ToLower(strings.Map(func(r rune) rune {
					if r == '\t' || r == '\n' || r == '\r' || r <= ' ' {
						return -1
					}
					return r
				}, a.Val))
				for _, bad := range []string{"javascript:", "vbscript:", "data:text/html"} {
					if strings.HasPrefix(u, bad) {
						t.Fatalf("readme %q links to %q in\n%s", src, a.Val, out)
					}
				}
			}
		}
	})
}
