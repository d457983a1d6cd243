// Package site renders a static HTML catalog of kfm bundles from plain
// files: an index page searchable and filterable by category and hook, and
// one page per bundle with its versions and signers, programs, params,
// maps, a capabilities section, an install snippet and the rendered readme.
//
// The output uses relative links only, so the directory can be served from
// any path or opened from file://. It needs no front-end framework: one
// style sheet and one small script (assets/), which filters the index as the
// user types; the index also reads ?q=, &category= and &hook= from its URL
// into the search controls, so that a link can carry a search.
//
// Readmes are markdown rendered by github.com/yuin/goldmark (CommonMark
// with GitHub tables, strikethrough, task lists and autolinks) with raw HTML
// disabled: HTML in a readme is dropped, and links with javascript:,
// vbscript:, file: or data: destinations lose their href, so a readme
// cannot inject script into the site.
//
// Build is deterministic: the same pages give byte-identical files (no
// timestamps, everything sorted).
package site
