package site

import (
	"html/template"
	"regexp"
	"strings"
)

var longDigest = regexp.MustCompile(`(sha256:[0-9a-f]{12})[0-9a-f]{52}`)

var funcs = template.FuncMap{
	"join": strings.Join,
	// shortKeys cuts sha256 key fingerprints to 12 hex digits.
	"shortKeys": func(s string) string { return longDigest.ReplaceAllString(s, "$1…") },
	"short": func(s string) string {
		if i := strings.IndexByte(s, ':'); i >= 0 && len(s) > i+13 {
			return s[:i+13]
		}
		return s
	},
}

const head = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.PageTitle}}</title>
<link rel="stylesheet" href="{{.Root}}assets/style.css">
</head>
<body>
<header class="top"><a href="{{.Root}}index.html">{{.Title}}</a><span>eBPF programs for XDP and TC, signed and chainable</span></header>
<main>
`

const trust = `{{define "trust"}}<span class="trust {{.Status}}">{{if eq .Status "accepted"}}&#10003; signed by <span title="{{.Signer}}">{{shortKeys .Signer}}</span>{{else if eq .Status "unsigned"}}unsigned{{else if eq .Status "refused"}}&#10007; not accepted by the local policy{{if .Signer}} (signed by <span title="{{.Signer}}">{{shortKeys .Signer}}</span>){{end}}{{else}}signatures not checked{{end}}</span>{{end}}`

var indexTmpl = template.Must(template.New("index").Funcs(funcs).Parse(trust + `{{define "page"}}` + head + `
<h1>Bundles</h1>
{{if .Namespaces}}<p class="repo">from {{join .Namespaces ", "}}</p>{{end}}
<div class="controls">
<input id="q" type="search" placeholder="Search by name, description, keyword or category" aria-label="Search bundles" autocomplete="off">
<select id="category" aria-label="Category"><option value="">All categories</option>{{range .Categories}}<option value="{{.}}">{{.}}</option>{{end}}</select>
<select id="hook" aria-label="Hook"><option value="">All hooks</option>{{range .Hooks}}<option value="{{.}}">{{.}}</option>{{end}}</select>
</div>
<div id="count">{{len .Bundles}} bundles</div>
<ul class="bundles">
{{range .Bundles}}<li class="bundle" data-text="{{.Text}}" data-categories="{{join .Categories " "}}" data-hooks="{{join .Hooks " "}}">
<h2><a href="{{.Href}}">{{.Name}}</a> <small>{{.Latest}}</small></h2>
<div class="repo">{{.Repository}}</div>
<p class="desc">{{if .Description}}{{.Description}}{{else}}<span class="placeholder">no description</span>{{end}}</p>
<div class="tags">{{range .Categories}}<span class="tag">{{.}}</span>{{end}}{{range .Hooks}}<span class="tag hook">{{.}}</span>{{end}}</div>
<div>{{template "trust" .Trust}}</div>
</li>
{{end}}</ul>
<p id="empty" class="empty" hidden>No bundle matches.</p>
</main>
<script src="assets/search.js"></script>
</body>
</html>
{{end}}{{template "page" .}}`))

var pageTmpl = template.Must(template.New("bundle").Funcs(funcs).Parse(trust + `{{define "page"}}` + head + `
<p><a href="../index.html">&larr; all bundles</a></p>
<h1>{{.Name}} <small>{{.Shown}}</small></h1>
<div class="repo">{{.Repository}}</div>
{{if .Description}}<p class="desc">{{.Description}}</p>{{end}}
<div class="tags">{{range .Categories}}<span class="tag">{{.}}</span>{{end}}{{range .Keywords}}<span class="tag hook">{{.}}</span>{{end}}</div>

<section id="install"><h2>Install</h2>
<pre><code>{{.Install}}</code></pre>
<p>{{template "trust" .Trust}}</p>
</section>

<section id="metadata"><h2>About</h2>
<dl class="meta">
<dt>latest version</dt><dd>{{.Latest}}</dd>
<dt>digest</dt><dd><code>{{.Digest}}</code></dd>
<dt>licence</dt><dd>{{.License}}</dd>
{{if .Authors}}<dt>authors</dt><dd>{{join .Authors ", "}}</dd>{{end}}
{{if .Homepage}}<dt>homepage</dt><dd><a href="{{.Homepage}}" rel="nofollow noopener">{{.Homepage}}</a></dd>{{end}}
{{if .Source}}<dt>source</dt><dd><a href="{{.Source}}" rel="nofollow noopener">{{.Source}}</a></dd>{{end}}
{{if .Created}}<dt>created</dt><dd>{{.Created}}</dd>{{end}}
</dl>
</section>

<section id="versions"><h2>Versions and signers</h2>
<table><thead><tr><th>version</th><th>digest</th><th>signature</th></tr></thead><tbody>
{{range .Versions}}<tr><td>{{.Tag}}</td><td><code>{{short .Descriptor.Digest.String}}</code></td><td>{{template "trust" .Trust}}</td></tr>
{{end}}</tbody></table>
{{if .MoreVersions}}<p class="placeholder">and {{.MoreVersions}} older versions</p>{{end}}
</section>

{{range .Programs}}<section class="program" id="program-{{.Function}}"><h2>Program {{.Function}}</h2>
<dl class="meta">
<dt>type</dt><dd>{{.Type}}</dd>
<dt>hooks</dt><dd>{{if .HooksText}}{{.HooksText}}{{else}}not chainable{{end}}</dd>
<dt>priority</dt><dd>{{.Priority}}</dd>
<dt>proceeds on</dt><dd>{{.ProceedText}}</dd>
{{if .Requires}}<dt>requires</dt><dd>{{.Requires}}</dd>{{end}}
</dl>
{{if .Params}}<h3>Params</h3>
<table><thead><tr><th>name</th><th>type</th><th>default</th><th>description</th></tr></thead><tbody>
{{range .Params}}<tr><td><code>{{.Name}}</code></td><td><code>{{.Type}}</code></td><td>{{.Default}}</td><td>{{.Description}}</td></tr>
{{end}}</tbody></table>{{end}}
{{if .Maps}}<h3>Maps</h3>
<table><thead><tr><th>name</th><th>type</th><th>pinning</th></tr></thead><tbody>
{{range .Maps}}<tr><td><code>{{.Name}}</code></td><td>{{.Type}}</td><td>{{.Pinning}}</td></tr>
{{end}}</tbody></table>{{end}}
<h3>Capabilities</h3>
<div class="capabilities">{{if .Computed}}{{if .Capabilities}}<ul>{{range .Capabilities}}<li>{{.}}</li>{{end}}</ul>{{else}}<p>none</p>{{end}}{{else}}<p class="placeholder">This bundle records no capabilities (it was published by an older kfm); <code>kfm inspect</code> computes them from the object.</p>{{end}}</div>
</section>
{{end}}
{{if .Readme}}<section id="readme" class="readme"><h2>Readme</h2>
{{.Readme}}
</section>{{end}}
</main>
</body>
</html>
{{end}}{{template "page" .}}`))
