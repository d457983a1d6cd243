package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/kfm-project/kfm/internal/testenv"
	"github.com/kfm-project/kfm/internal/testregistry"
	"github.com/kfm-project/kfm/registry/catalog"
)

// marketplace publishes sample programs with their bundle.yaml to two real
// registries: open (catalog API allowed, two repositories per catalog page)
// and closed (the catalog API answers 404, as on GHCR), and trusts one key.
type marketplace struct {
	open, closed *testregistry.Registry
	trusted      string // fingerprint of the trusted key
}

func newMarketplace(t *testing.T) *marketplace {
	t.Helper()
	cliEnv(t)
	m := &marketplace{
		open:   testregistry.Start(t, testregistry.Options{CatalogPageSize: 2}),
		closed: testregistry.Start(t, testregistry.Options{RefuseCatalog: 404}),
	}
	key, pub := keyPair(t, "pw")
	otherKey, _ := keyPair(t, "pw")
	m.trusted = keyFingerprint(t, pub)
	policy := fmt.Sprintf("version: 1\nrules:\n  - match: '%s/**'\n    keys: [%s]\n  - match: '%s/**'\n    keys: [%s]\n", m.open.Host(), pub, m.closed.Host(), pub)
	if err := os.WriteFile(filepath.Join(os.Getenv("KFM_CONFIG_DIR"), "policy.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	pub1 := func(r *testregistry.Registry, prog, repo, version, key string) {
		t.Helper()
		args := []string{"publish", "../../examples/programs/" + prog + ".o", r.Ref("kfm/"+repo, version),
			"--bundle", "../../examples/programs/" + prog + "/bundle.yaml", "--version", version}
		if key != "" {
			args = append(args, "--sign", "--key", key)
		}
		if _, stderr, code := kfm(t, "", args...); code != exitOK {
			t.Fatalf("kfm %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
	}
	pub1(m.open, "xdp_ratelimit", "xdp-ratelimit", "1.0.0", key)
	pub1(m.open, "xdp_ratelimit", "xdp-ratelimit", "1.1.0", key)
	pub1(m.open, "xdp_ratelimit", "xdp-ratelimit", "1.2.0-rc.1", key)
	pub1(m.open, "xdp_count", "xdp-count", "1.0.0", "")   // unsigned
	pub1(m.open, "tc_mark", "tc-mark", "1.0.0", otherKey) // signed by a key the policy does not accept
	pub1(m.closed, "xdp_portfilter", "xdp-portfilter", "1.0.0", key)
	pub1(m.closed, "xdp_icmpdrop", "xdp-icmpdrop", "2.0.0", key)
	return m
}

func (m *marketplace) publishIndex(t *testing.T) {
	t.Helper()
	out, stderr, code := kfm(t, "", "catalog", "publish", "--registry", m.closed.Host()+"/kfm", "xdp-portfilter", "xdp-icmpdrop")
	if code != exitOK || !strings.Contains(out, m.closed.Host()+"/kfm/kfm-catalog:latest@sha256:") || !strings.Contains(out, "2 bundle(s)") {
		t.Fatalf("catalog publish: exit %d: %s %s", code, out, stderr)
	}
}

func searchJSON(t *testing.T, wantCode int, args ...string) searchOutput {
	t.Helper()
	out, stderr, code := kfm(t, "", append([]string{"search", "-o", "json"}, args...)...)
	if code != wantCode {
		t.Fatalf("kfm search %v: exit %d, want %d: %s", args, code, wantCode, stderr)
	}
	var res searchOutput
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("search -o json: %v: %s", err, out)
	}
	return res
}

func repos(rs []catalog.Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Repository[strings.IndexByte(r.Repository, '/')+1:])
	}
	return out
}

// kfm search across two registries, one through its catalog API, the other
// (which refuses the catalog API) through an index artifact; signers as the
// policy sees them; matching on categories; no match is exit 0.
func TestSearchTwoRegistries(t *testing.T) {
	m := newMarketplace(t)
	openNS, closedNS := m.open.Host()+"/kfm", m.closed.Host()+"/kfm"

	// The closed registry has no index yet: search says how to get one,
	// still lists the open registry's bundles, and exits 1.
	out, stderr, code := kfm(t, "", "search", "--registry", openNS, "--registry", closedNS)
	if code != exitFailure || !strings.Contains(stderr, "kfm catalog publish --registry "+closedNS) || !strings.Contains(out, "xdp-ratelimit") {
		t.Fatalf("search without index: exit %d\n%s\n%s", code, out, stderr)
	}

	m.publishIndex(t)
	res := searchJSON(t, exitOK, "--registry", openNS, "--registry", closedNS)
	all := repos(res.Results)
	sort.Strings(all)
	if got, want := strings.Join(all, " "), "kfm/tc-mark kfm/xdp-count kfm/xdp-icmpdrop kfm/xdp-portfilter kfm/xdp-ratelimit"; got != want {
		t.Fatalf("search everything: %s, want %s", got, want)
	}
	if res.Registries[0].From != "catalog" || res.Registries[1].From != "index" {
		t.Errorf("sources: %+v", res.Registries)
	}
	byRepo := map[string]catalog.Result{}
	for _, r := range res.Results {
		byRepo[r.Repository[strings.IndexByte(r.Repository, '/')+1:]] = r
	}
	for repo, want := range map[string]struct{ latest, status string }{
		"kfm/xdp-ratelimit":  {"1.1.0", catalog.TrustAccepted}, // the release, not 1.2.0-rc.1
		"kfm/xdp-count":      {"1.0.0", catalog.TrustUnsigned},
		"kfm/tc-mark":        {"1.0.0", catalog.TrustRefused},
		"kfm/xdp-portfilter": {"1.0.0", catalog.TrustAccepted},
		"kfm/xdp-icmpdrop":   {"2.0.0", catalog.TrustAccepted},
	} {
		r := byRepo[repo]
		if r.Latest != want.latest || r.Trust.Status != want.status {
			t.Errorf("%s: latest %s, trust %+v; want %s, %s", repo, r.Latest, r.Trust, want.latest, want.status)
		}
		if want.status == catalog.TrustAccepted && r.Trust.Signer != "key "+m.trusted {
			t.Errorf("%s: signer %q, want key %s", repo, r.Trust.Signer, m.trusted)
		}
	}
	if got := byRepo["kfm/xdp-ratelimit"].Versions; strings.Join(got, " ") != "1.2.0-rc.1 1.1.0 1.0.0" {
		t.Errorf("versions of xdp-ratelimit: %v", got)
	}

	// Matching: a category, a keyword, a description word; each term must
	// match.
	for terms, want := range map[string]string{
		"firewall":      "kfm/xdp-icmpdrop kfm/xdp-portfilter",
		"observability": "kfm/xdp-count",
		"token-bucket":  "kfm/xdp-ratelimit",
		"ratelimit":     "kfm/xdp-ratelimit",
		"fwmark":        "kfm/tc-mark",
		"firewall ping": "kfm/xdp-icmpdrop",
		"ICMP":          "kfm/xdp-icmpdrop",
	} {
		args := append(strings.Fields(terms), "--registry", openNS, "--registry", closedNS)
		if got := strings.Join(repos(searchJSON(t, exitOK, args...).Results), " "); got != want {
			t.Errorf("search %q: %s, want %s", terms, got, want)
		}
	}

	// No match: exit 0, nothing on stdout, a note on stderr.
	out, stderr, code = kfm(t, "", "search", "nosuchthing", "--registry", openNS, "--registry", closedNS)
	if code != exitOK || out != "" || !strings.Contains(stderr, "No bundles match") {
		t.Errorf("search without match: exit %d, %q, %q", code, out, stderr)
	}

	// The text table: one line per bundle with version, hooks, signer.
	out, _, code = kfm(t, "", "search", "rate", "--registry", openNS)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 || !regexp.MustCompile(`xdp-ratelimit\s+1\.1\.0\s+xdp\s+signed: key sha256:[0-9a-f]{12}\s+Drops packets above a rate`).MatchString(lines[1]) {
		t.Errorf("search text: exit %d\n%s", code, out)
	}

	// Without a policy: listed, signatures not checked.
	os.Remove(filepath.Join(os.Getenv("KFM_CONFIG_DIR"), "policy.yaml"))
	res = searchJSON(t, exitOK, "count", "--registry", openNS)
	if len(res.Results) != 1 || res.Results[0].Trust.Status != catalog.TrustUnknown {
		t.Errorf("search without policy: %+v", res.Results)
	}
}

// kfm show: versions with signers, metadata, params, readme (rendered as
// text, raw in JSON).
func TestShow(t *testing.T) {
	m := newMarketplace(t)
	ref := m.open.Host() + "/kfm/xdp-ratelimit"
	out, stderr, code := kfm(t, "", "show", ref)
	if code != exitOK {
		t.Fatalf("show: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"xdp-ratelimit 1.1.0", "categories:  ratelimit, ddos", "keywords:    token-bucket, ipv4, per-source",
		"install:     kfm install " + ref + ":1.1.0 --iface IF",
		"1.2.0-rc.1", "signed: key " + m.trusted, "rate", "packets per second and source address",
		"CAPABILITIES", "README", "\n  INSTALL\n", "• buckets (LRU hash",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "```") || strings.Contains(out, "**") {
		t.Errorf("show output has raw markdown:\n%s", out)
	}
	out, _, code = kfm(t, "", "show", ref+":1.0.0", "-o", "json")
	var page catalog.Page
	if err := json.Unmarshal([]byte(out), &page); err != nil || code != exitOK {
		t.Fatalf("show -o json: exit %d: %v: %s", code, err, out)
	}
	if page.Shown != "1.0.0" || page.Latest != "1.1.0" || len(page.Versions) != 3 || !strings.Contains(page.Metadata.Readme, "| rate  |") {
		t.Errorf("show -o json: shown %s latest %s versions %d readme %q", page.Shown, page.Latest, len(page.Versions), page.Metadata.Readme)
	}
	// kfm inspect shows the publisher's metadata too.
	out, stderr, code = kfm(t, "", "inspect", ref+":1.1.0")
	for _, want := range []string{"homepage:     https://github.com/kfm-project/kfm", "categories:   ratelimit, ddos", "keywords:     token-bucket, ipv4, per-source", "authors:      kfm project", "readme:       "} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("inspect (exit %d) lacks %q:\n%s%s", code, want, out, stderr)
		}
	}

	// An unsigned bundle shows as such, not as an error.
	out, _, code = kfm(t, "", "show", m.open.Host()+"/kfm/xdp-count")
	if code != exitOK || !strings.Contains(out, "unsigned") {
		t.Errorf("show unsigned: exit %d\n%s", code, out)
	}
}

// kfm catalog build: a static site from both registries, byte-identical
// when built twice, then opened in headless Chromium (Debian's chromium,
// installed by scripts/deps.sh): --dump-dom shows the script ran and the
// ?q=/&category=/&hook= filters work; over the DevTools protocol the test
// types into the search box, picks a hook and clicks through to a bundle
// page; every relative link resolves to a file of the site; screenshots go
// to $KFM_SCREENSHOT_DIR when set.
func TestCatalogSite(t *testing.T) {
	m := newMarketplace(t)
	m.publishIndex(t)
	build := func(dir string) {
		t.Helper()
		_, stderr, code := kfm(t, "", "catalog", "build", "--registry", m.open.Host()+"/kfm", "--registry", m.closed.Host()+"/kfm", "--dir", dir)
		if code != exitOK {
			t.Fatalf("catalog build: exit %d: %s", code, stderr)
		}
	}
	dir := filepath.Join(t.TempDir(), "site")
	build(dir)
	again := filepath.Join(t.TempDir(), "site")
	build(again)
	build(again) // rebuilt in place
	files := siteFiles(t, dir)
	if len(files) != 9 { // index, 5 pages, 2 assets, marker
		t.Errorf("site files: %v", files)
	}
	for name, data := range files {
		if !bytes.Equal(data, siteFiles(t, again)[name]) {
			t.Errorf("%s differs between two builds of the same registry state", name)
		}
	}
	page := string(files["bundles/"+strings.ReplaceAll(m.open.Host(), ":", "-")+"-kfm-xdp-ratelimit.html"])
	for _, want := range []string{"kfm install " + m.open.Host() + "/kfm/xdp-ratelimit:1.1.0 --iface IF", "<table>", "<td>rate</td>", "Capabilities", "signed by <span title=\"key " + m.trusted + "\">key " + m.trusted[:19] + "…</span>"} {
		if !strings.Contains(page, want) {
			t.Errorf("ratelimit page lacks %q", want)
		}
	}

	chromium := testenv.RequireTool(t, "chromium")
	index := filepath.Join(dir, "index.html")
	dom := dumpDOM(t, chromium, "file://"+index)
	if n := strings.Count(dom, `<li class="bundle"`); n != 5 || strings.Count(dom, "hidden") > 1 {
		t.Fatalf("index in Chromium: %d bundles\n%s", n, dom)
	}
	if !strings.Contains(dom, "5 of 5 bundles") {
		t.Errorf("the script did not run: no count in\n%s", dom)
	}
	// The search box filters: ?q= fills it and runs the same filter as
	// typing does.
	for q, want := range map[string][]string{
		"?q=firewall":                 {"xdp-icmpdrop", "xdp-portfilter"},
		"?q=ping":                     {"xdp-icmpdrop"},
		"?hook=tc-ingress":            {"tc-mark"},
		"?category=observability":     {"xdp-count"},
		"?q=nosuchthing":              nil,
		"?q=drops&category=ratelimit": {"xdp-ratelimit"},
	} {
		dom := dumpDOM(t, chromium, "file://"+index+q)
		shown := visibleBundles(dom)
		if strings.Join(shown, " ") != strings.Join(want, " ") {
			t.Errorf("index%s: shown %v, want %v", q, shown, want)
		}
		if want == nil && !regexp.MustCompile(`<p id="empty" class="empty">No bundle matches`).MatchString(dom) {
			t.Errorf("index%s: no 'No bundle matches' note", q)
		}
	}
	// Typing into the search box filters as the user types; the selects
	// filter too; clicking a bundle opens its page.
	d := openDevtools(t, chromium, "file://"+index)
	d.typeText("#q", "fire")
	if got := d.visible(); got != "xdp-icmpdrop xdp-portfilter" {
		t.Errorf("after typing \"fire\": %q", got)
	}
	d.typeText("#q", "wall ping")
	if got, count := d.visible(), d.eval(`document.getElementById("count").textContent`); got != "xdp-icmpdrop" || count != "1 of 5 bundles" {
		t.Errorf("after typing \"firewall ping\": %q, %q", got, count)
	}
	d.eval(`document.getElementById("q").value = ""; document.getElementById("q").dispatchEvent(new Event("input"))`)
	d.eval(`document.getElementById("hook").value = "tc-egress"; document.getElementById("hook").dispatchEvent(new Event("change"))`)
	if got := d.visible(); got != "tc-mark" {
		t.Errorf("hook tc-egress: %q", got)
	}
	d.eval(`document.querySelector("li.bundle:not([hidden]) h2 a").click()`)
	d.waitFor(`location.pathname.endsWith("-kfm-tc-mark.html") && document.readyState === "complete"`)
	if got := d.eval(`document.querySelector("h1").textContent + " / " + getComputedStyle(document.body).backgroundColor`); got != "tc-mark 1.0.0 / rgb(246, 247, 250)" {
		t.Errorf("bundle page after the click: %q (heading / style sheet applied)", got)
	}

	// Every relative link, style sheet and script resolves to a file: in
	// the DOM Chromium built for the index and one bundle page, and in the
	// files of every other page.
	hrefRe := regexp.MustCompile(`(?:href|src)="([^"#?]+)`)
	ratelimitPage := ""
	for name, data := range files {
		if !strings.HasSuffix(name, ".html") {
			continue
		}
		html := string(data)
		if name == "index.html" || strings.HasSuffix(name, "-kfm-xdp-ratelimit.html") {
			html = dumpDOM(t, chromium, "file://"+filepath.Join(dir, name))
			if name != "index.html" {
				ratelimitPage = filepath.Join(dir, name)
			}
		}
		links := 0
		for _, m := range hrefRe.FindAllStringSubmatch(html, -1) {
			if strings.HasPrefix(m[1], "http") {
				continue
			}
			links++
			if _, err := os.Stat(filepath.Join(dir, filepath.Dir(name), m[1])); err != nil {
				t.Errorf("%s links to %s, which does not exist", name, m[1])
			}
		}
		if links < 2 {
			t.Errorf("%s: only %d relative links", name, links)
		}
	}
	if ratelimitPage == "" {
		t.Fatalf("no page for xdp-ratelimit among %v", files)
	}
	shot := filepath.Join(os.Getenv("KFM_SCREENSHOT_DIR"), "index.png")
	if os.Getenv("KFM_SCREENSHOT_DIR") == "" {
		shot = filepath.Join(t.TempDir(), "index.png")
	}
	chrome(t, chromium, "--screenshot="+shot, "--window-size=1280,900", "file://"+index)
	pageShot := filepath.Join(filepath.Dir(shot), "bundle.png")
	chrome(t, chromium, "--screenshot="+pageShot, "--window-size=1280,1800", "file://"+ratelimitPage)
	for _, s := range []string{shot, pageShot} {
		if st, err := os.Stat(s); err != nil || st.Size() < 10000 {
			t.Errorf("screenshot %s: %v", s, err)
		}
	}
}

func siteFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var bundleItem = regexp.MustCompile(`<li class="bundle"[^>]*?( hidden(="")?)?>\s*<h2><a href="[^"]*">([^<]+)</a>`)

// visibleBundles are the names of the bundles the DOM does not hide.
func visibleBundles(dom string) []string {
	var out []string
	for _, m := range bundleItem.FindAllStringSubmatch(dom, -1) {
		if m[1] == "" {
			out = append(out, m[3])
		}
	}
	return out
}

// chrome runs headless Chromium with a fresh profile and no network
// services.
func chrome(t *testing.T, chromium string, args ...string) string {
	t.Helper()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--no-first-run", "--user-data-dir=" + t.TempDir(), "--allow-file-access-from-files"}
	cmd := exec.Command(chromium, append(base, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

func dumpDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	return chrome(t, chromium, "--dump-dom", url)
}
