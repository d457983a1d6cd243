package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// devtools drives one headless Chromium page over the DevTools protocol
// (a websocket on 127.0.0.1), so that a test can type into a page as a user
// does.
type devtools struct {
	t    *testing.T
	conn *websocket.Conn
	id   int
}

var devtoolsListening = regexp.MustCompile(`DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)`)

// openDevtools starts Chromium on url with a fresh profile and a DevTools
// port chosen by Chromium, and connects to the page. Chromium is killed
// when the test ends.
func openDevtools(t *testing.T, chromium, url string) *devtools {
	t.Helper()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--no-first-run", "--user-data-dir="+t.TempDir(),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1", url)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsListening.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[2]
			}
		}
	}()
	var p string
	select {
	case p = <-port:
	case <-time.After(60 * time.Second):
		t.Fatal("chromium did not open its DevTools port within 60s")
	}
	// The page target's websocket.
	var wsURL string
	for deadline := time.Now().Add(30 * time.Second); wsURL == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://127.0.0.1:" + p + "/json/list")
		if err != nil {
			continue
		}
		var targets []struct{ Type, URL, WebSocketDebuggerURL string }
		err = json.NewDecoder(resp.Body).Decode(&targets)
		resp.Body.Close()
		for _, tg := range targets {
			if err == nil && tg.Type == "page" && strings.HasPrefix(tg.URL, "file://") {
				wsURL = tg.WebSocketDebuggerURL
			}
		}
	}
	if wsURL == "" {
		t.Fatal("no page target in chromium's DevTools")
	}
	conn, err := websocket.Dial(wsURL, "", "http://127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &devtools{t: t, conn: conn}
	d.waitFor(`document.readyState === "complete" && document.getElementById("count") !== null`)
	return d
}

// call sends one DevTools command and returns its result.
func (d *devtools) call(method string, params any) json.RawMessage {
	d.t.Helper()
	d.id++
	if err := websocket.JSON.Send(d.conn, map[string]any{"id": d.id, "method": method, "params": params}); err != nil {
		d.t.Fatal(err)
	}
	d.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct{ Message string }
		}
		if err := websocket.JSON.Receive(d.conn, &msg); err != nil {
			d.t.Fatalf("devtools %s: %v", method, err)
		}
		if msg.ID != d.id {
			continue // an event
		}
		if msg.Error != nil {
			d.t.Fatalf("devtools %s: %s", method, msg.Error.Message)
		}
		return msg.Result
	}
}

// eval evaluates a JavaScript expression in the page and returns its value
// as a string.
func (d *devtools) eval(expr string) string {
	d.t.Helper()
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails any `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(d.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}), &res); err != nil {
		d.t.Fatal(err)
	}
	if res.ExceptionDetails != nil {
		d.t.Fatalf("%s: %v", expr, res.ExceptionDetails)
	}
	return fmt.Sprint(res.Result.Value)
}

func (d *devtools) waitFor(cond string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for d.eval("!!("+cond+")") != "true" {
		select {
		case <-ctx.Done():
			d.t.Fatalf("timed out waiting for %s", cond)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// typeText focuses the element and types text as keyboard input.
func (d *devtools) typeText(selector, text string) {
	d.t.Helper()
	d.eval(fmt.Sprintf("document.querySelector(%q).focus()", selector))
	for _, r := range text {
		d.call("Input.insertText", map[string]any{"text": string(r)})
	}
}

// visible lists the names of the bundles the index shows.
func (d *devtools) visible() string {
	return d.eval(`Array.from(document.querySelectorAll("li.bundle")).filter(li => !li.hidden).map(li => li.querySelector("h2 a").textContent).join(" ")`)
}
