package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inReq is one request line as the benchmark driver writes it.
type inReq struct {
	AtUs    int64             `json:"at_us"`
	Method  string            `json:"method,omitempty"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
}

type runOutput struct {
	exit    int
	summary map[string]any
	results []outLine
	stderr  string
}

func writeInput(t *testing.T, reqs []inReq) string {
	t.Helper()
	var b bytes.Buffer
	for _, r := range reqs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "requests.jsonl")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// runLoadgen runs the program with the given requests against base and
// returns the exit code, the parsed summary and the parsed result lines.
func runLoadgen(t *testing.T, base string, reqs []inReq, extra ...string) runOutput {
	t.Helper()
	in := writeInput(t, reqs)
	out := filepath.Join(t.TempDir(), "results.jsonl")
	args := append([]string{"-base", base, "-in", in, "-out", out, "-start-delay", "20ms"}, extra...)
	var stdout, stderr bytes.Buffer
	ro := runOutput{exit: run(args, &stdout, &stderr), stderr: stderr.String()}
	if ro.exit != exitOK {
		return ro
	}
	if err := json.Unmarshal(stdout.Bytes(), &ro.summary); err != nil {
		t.Fatalf("summary %q: %v", stdout.String(), err)
	}
	if n := strings.Count(stdout.String(), "\n"); n != 1 {
		t.Fatalf("want one summary line on stdout, got %d: %q", n, stdout.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l outLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("result line %q: %v", sc.Text(), err)
		}
		ro.results = append(ro.results, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ro.results) != len(reqs) {
		t.Fatalf("want %d result lines, got %d", len(reqs), len(ro.results))
	}
	for i, l := range ro.results {
		if l.I != i {
			t.Fatalf("result line %d has i=%d: output not in input order", i, l.I)
		}
	}
	return ro
}

func num(t *testing.T, s map[string]any, key string) float64 {
	t.Helper()
	v, ok := s[key].(float64)
	if !ok {
		t.Fatalf("summary has no number %q: %v", key, s)
	}
	return v
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestRequestsSentExactly checks that method, path, headers and the body
// bytes reach the server exactly as given, and that the response body is kept.
func TestRequestsSentExactly(t *testing.T) {
	type seen struct {
		Method  string            `json:"method"`
		URI     string            `json:"uri"`
		Host    string            `json:"host"`
		Headers map[string]string `json:"headers"`
		BodySHA string            `json:"body_sha"`
		BodyLen int               `json:"body_len"`
		Proto   string            `json:"proto"`
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := seen{Method: r.Method, URI: r.RequestURI, Host: r.Host, Headers: map[string]string{},
			BodySHA: sha(b), BodyLen: len(b), Proto: r.Proto}
		for k := range r.Header {
			s.Headers[k] = r.Header.Get(k)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	}))
	defer srv.Close()

	bodies := []string{
		`{"request_id":"r-1","amount":100,"currency":"EUR"}`,
		"{\"player\":\"Zoë \\u00e9\",\"note\":\"a\\nb\\tc \\\"q\\\" <&>\"}\n",
		"", // no body
		"raw bytes: \u00ff\u0001 ✓ \U0001F3B0",
	}
	reqs := []inReq{
		{AtUs: 0, Method: "POST", Path: "/v1/providers/prov-nova/wallet/bet",
			Headers: map[string]string{"X-Agg-Timestamp": "1795000000", "X-Agg-Signature": "ab12cd34", "Content-Type": "application/json"},
			Body:    bodies[0]},
		{AtUs: 1000, Method: "PUT", Path: "/v1/x?a=1&b=%20c", Headers: map[string]string{"x-lower-case": "v 1"}, Body: bodies[1]},
		{AtUs: 2000, Path: "/health", Headers: map[string]string{"Host": "wallet.example.test"}},
		{AtUs: 3000, Method: "POST", Path: "/bin", Body: bodies[3]},
	}
	ro := runLoadgen(t, srv.URL, reqs)
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	wantMethods := []string{"POST", "PUT", "GET", "POST"}
	wantURIs := []string{"/v1/providers/prov-nova/wallet/bet", "/v1/x?a=1&b=%20c", "/health", "/bin"}
	for i, l := range ro.results {
		if l.Code != 200 || l.Err != "" {
			t.Fatalf("request %d: code %d err %q", i, l.Code, l.Err)
		}
		var s seen
		if err := json.Unmarshal([]byte(l.Body), &s); err != nil {
			t.Fatalf("request %d: response body %q not kept: %v", i, l.Body, err)
		}
		if s.Method != wantMethods[i] || s.URI != wantURIs[i] {
			t.Errorf("request %d: server saw %s %s, want %s %s", i, s.Method, s.URI, wantMethods[i], wantURIs[i])
		}
		if s.Proto != "HTTP/1.1" {
			t.Errorf("request %d: proto %s", i, s.Proto)
		}
		if s.BodySHA != sha([]byte(bodies[i])) || s.BodyLen != len(bodies[i]) {
			t.Errorf("request %d: body differs (len %d, want %d)", i, s.BodyLen, len(bodies[i]))
		}
		for k, v := range reqs[i].Headers {
			if strings.EqualFold(k, "Host") {
				continue
			}
			if got := s.Headers[http.CanonicalHeaderKey(k)]; got != v {
				t.Errorf("request %d: header %s = %q, want %q", i, k, got, v)
			}
		}
		if _, ok := s.Headers["Accept-Encoding"]; ok {
			t.Errorf("request %d: compression was requested", i)
		}
	}
	var s2 seen
	json.Unmarshal([]byte(ro.results[2].Body), &s2)
	if s2.Host != "wallet.example.test" {
		t.Errorf("Host header: server saw %q", s2.Host)
	}
	if got := num(t, ro.summary, "responses"); got != 4 {
		t.Errorf("responses = %v", got)
	}
}

// TestOpenLatencyFromSchedule: every request takes 50 ms at the server, so
// every latency is at least 50 ms.
func TestOpenLatencyFromSchedule(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	var reqs []inReq
	for i := 0; i < 8; i++ {
		reqs = append(reqs, inReq{AtUs: int64(i) * 5000, Method: "POST", Path: "/s", Body: "x"})
	}
	ro := runLoadgen(t, srv.URL, reqs, "-label", "sleep")
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	for i, l := range ro.results {
		if l.Code != 200 || l.Body != "ok" {
			t.Fatalf("request %d: code %d body %q err %q", i, l.Code, l.Body, l.Err)
		}
		if l.LatUs < 50000 {
			t.Errorf("request %d: lat_us %d < 50000", i, l.LatUs)
		}
		if l.LateUs < 0 || l.LateUs > l.LatUs {
			t.Errorf("request %d: late_us %d (lat_us %d)", i, l.LateUs, l.LatUs)
		}
	}
	s := ro.summary
	if s["label"] != "sleep" || s["mode"] != "open" {
		t.Errorf("label/mode: %v %v", s["label"], s["mode"])
	}
	if got := num(t, s, "send_window_s"); got != 0.035 {
		t.Errorf("send_window_s = %v, want 0.035", got)
	}
	if got := num(t, s, "duration_s"); got < 0.035+0.05 {
		t.Errorf("duration_s = %v, want >= 0.085", got)
	}
	if num(t, s, "late_max_us") < num(t, s, "late_p99_us") || num(t, s, "late_p99_us") < num(t, s, "late_p50_us") {
		t.Errorf("late percentiles out of order: %v", s)
	}
}

// TestOpenLatencyIncludesQueueing: 20 requests scheduled at once against a
// server that handles one at a time for 10 ms each. Latency counts from the
// schedule, so the k-th completed request has waited at least (k+1)*10 ms.
func TestOpenLatencyIncludesQueueing(t *testing.T) {
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		time.Sleep(10 * time.Millisecond)
		mu.Unlock()
		io.WriteString(w, "done")
	}))
	defer srv.Close()
	reqs := make([]inReq, 20)
	for i := range reqs {
		reqs[i] = inReq{AtUs: 0, Method: "POST", Path: "/q", Body: strconv.Itoa(i)}
	}
	ro := runLoadgen(t, srv.URL, reqs)
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	lats := make([]int64, 0, len(reqs))
	for i, l := range ro.results {
		if l.Code != 200 {
			t.Fatalf("request %d: code %d err %q", i, l.Code, l.Err)
		}
		lats = append(lats, l.LatUs)
	}
	sort.Slice(lats, func(a, b int) bool { return lats[a] < lats[b] })
	for k, v := range lats {
		if min := int64(k+1) * 10000; v < min {
			t.Errorf("%d-th fastest latency %d us < %d us: queueing not counted", k, v, min)
		}
	}
	if last := lats[len(lats)-1]; last < 190000 {
		t.Errorf("slowest latency %d us, want >= 190000", last)
	}
}

// TestOpenSendsInScheduleOrder: requests listed out of order are sent in
// at_us order, and the results still come out in input order.
func TestOpenSendsInScheduleOrder(t *testing.T) {
	var mu sync.Mutex
	var arrivals []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Id")
		mu.Lock()
		arrivals = append(arrivals, id)
		mu.Unlock()
		io.WriteString(w, "echo "+id)
	}))
	defer srv.Close()
	ats := []int64{200000, 0, 250000, 50000, 150000, 100000}
	var reqs []inReq
	for i, at := range ats {
		reqs = append(reqs, inReq{AtUs: at, Method: "POST", Path: "/o",
			Headers: map[string]string{"X-Id": strconv.Itoa(i)}, Body: "{}"})
	}
	ro := runLoadgen(t, srv.URL, reqs)
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	want := []string{"1", "3", "5", "4", "0", "2"}
	if strings.Join(arrivals, ",") != strings.Join(want, ",") {
		t.Errorf("server saw order %v, want %v", arrivals, want)
	}
	for i, l := range ro.results {
		if l.Body != "echo "+strconv.Itoa(i) {
			t.Errorf("result %d has body %q", i, l.Body)
		}
	}
	if got := num(t, ro.summary, "send_window_s"); got != 0.25 {
		t.Errorf("send_window_s = %v", got)
	}
	if got := num(t, ro.summary, "first_send_s"); got < 0 || got > 0.25 {
		t.Errorf("first_send_s = %v", got)
	}
}

// TestClosedConcurrencyLimit: the server never sees more handlers at once
// than -concurrency.
func TestClosedConcurrencyLimit(t *testing.T) {
	var cur, peak atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		cur.Add(-1)
		io.WriteString(w, r.Header.Get("X-Id"))
	}))
	defer srv.Close()
	var reqs []inReq
	for i := 0; i < 30; i++ {
		// at_us is ignored in closed mode.
		reqs = append(reqs, inReq{AtUs: int64(30-i) * 1e6, Path: "/c", Headers: map[string]string{"X-Id": strconv.Itoa(i)}})
	}
	ro := runLoadgen(t, srv.URL, reqs, "-mode", "closed", "-concurrency", "3")
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	if p := peak.Load(); p > 3 {
		t.Errorf("server saw %d concurrent requests, limit 3", p)
	}
	if m := num(t, ro.summary, "max_in_flight"); m > 3 || m < 1 {
		t.Errorf("max_in_flight = %v", m)
	}
	for i, l := range ro.results {
		if l.Code != 200 || l.Body != strconv.Itoa(i) {
			t.Errorf("result %d: code %d body %q", i, l.Code, l.Body)
		}
		if l.LatUs < 5000 {
			t.Errorf("result %d: lat_us %d < 5000", i, l.LatUs)
		}
		if l.LateUs != 0 {
			t.Errorf("result %d: late_us %d in closed mode", i, l.LateUs)
		}
	}
	if ro.summary["mode"] != "closed" || num(t, ro.summary, "requests") != 30 {
		t.Errorf("summary %v", ro.summary)
	}
	// Far shorter than the largest at_us (30 s): the schedule was ignored.
	if d := num(t, ro.summary, "duration_s"); d > 20 {
		t.Errorf("duration_s = %v: closed mode followed at_us", d)
	}
}

// TestKeepAlive: sequential requests reuse one connection.
func TestKeepAlive(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	var reqs []inReq
	for i := 0; i < 20; i++ {
		reqs = append(reqs, inReq{Method: "POST", Path: "/k", Body: `{"i":` + strconv.Itoa(i) + `}`})
	}
	ro := runLoadgen(t, srv.URL, reqs, "-mode", "closed", "-concurrency", "1")
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("server saw %d connections for 20 sequential requests, want 1", n)
	}
}

// TestConnectionRefused: a closed port gives code 0 with an error, and the
// run still completes with exit 0.
func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	reqs := []inReq{{Path: "/a"}, {AtUs: 1000, Method: "POST", Path: "/b", Body: "x"}, {AtUs: 2000, Path: "/c"}}
	for _, mode := range []string{"open", "closed"} {
		ro := runLoadgen(t, "http://"+addr, reqs, "-mode", mode)
		if ro.exit != exitOK {
			t.Fatalf("%s: exit %d: %s", mode, ro.exit, ro.stderr)
		}
		for i, l := range ro.results {
			if l.Code != 0 || l.Err != "connection refused" {
				t.Errorf("%s: result %d: code %d err %q", mode, i, l.Code, l.Err)
			}
		}
		if num(t, ro.summary, "transport_errors") != 3 || num(t, ro.summary, "responses") != 0 {
			t.Errorf("%s: summary %v", mode, ro.summary)
		}
		if codes, _ := ro.summary["codes"].(map[string]any); codes == nil || len(codes) != 0 {
			t.Errorf("%s: codes %v", mode, ro.summary["codes"])
		}
	}
}

// TestTimeout: no response within -timeout gives code 0 and "timeout"; a body
// that stops half-way keeps its status code and also reports "timeout".
func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/partial" {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			io.WriteString(w, "half")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	defer close(release)
	reqs := []inReq{{Path: "/slow"}, {Path: "/partial"}}
	ro := runLoadgen(t, srv.URL, reqs, "-timeout", "150ms")
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	if l := ro.results[0]; l.Code != 0 || l.Err != "timeout" || l.LatUs < 150000 {
		t.Errorf("slow: %+v", l)
	}
	if l := ro.results[1]; l.Code != 200 || l.Err != "timeout" {
		t.Errorf("partial: %+v", l)
	}
	if num(t, ro.summary, "transport_errors") != 1 || num(t, ro.summary, "responses") != 1 {
		t.Errorf("summary %v", ro.summary)
	}
}

// TestStatusCodes: the summary counts responses per status code.
func TestStatusCodes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.Header.Get("X-Want"))
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"code":%d}`, code)
	}))
	defer srv.Close()
	var reqs []inReq
	for i := 0; i < 10; i++ {
		code := "200"
		switch {
		case i%5 == 0:
			code = "503"
		case i == 7:
			code = "302"
		}
		reqs = append(reqs, inReq{AtUs: int64(i) * 1000, Method: "POST", Path: "/s",
			Headers: map[string]string{"X-Want": code, "Location": "/elsewhere"}, Body: "{}"})
	}
	ro := runLoadgen(t, srv.URL, reqs)
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	codes, _ := ro.summary["codes"].(map[string]any)
	if codes["200"] != 7.0 || codes["503"] != 2.0 || codes["302"] != 1.0 || len(codes) != 3 {
		t.Errorf("codes %v", codes)
	}
	if ro.results[5].Code != 503 || ro.results[5].Body != `{"code":503}` {
		t.Errorf("result 5: %+v", ro.results[5])
	}
	if ro.results[7].Code != 302 {
		t.Errorf("redirect followed: %+v", ro.results[7])
	}
	s := ro.summary
	if num(t, s, "requests") != 10 || num(t, s, "responses") != 10 || num(t, s, "transport_errors") != 0 {
		t.Errorf("summary %v", s)
	}
	if num(t, s, "achieved_per_s") <= 0 || num(t, s, "cpu_user_s")+num(t, s, "cpu_sys_s") <= 0 {
		t.Errorf("summary %v", s)
	}
	for _, k := range []string{"label", "mode", "requests", "responses", "transport_errors", "codes",
		"first_send_s", "duration_s", "send_window_s", "achieved_per_s", "late_p50_us", "late_p99_us",
		"late_max_us", "max_in_flight", "cpu_user_s", "cpu_sys_s"} {
		if _, ok := s[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
}

func TestBadUsage(t *testing.T) {
	dir := t.TempDir()
	good := writeInput(t, []inReq{{Path: "/x"}})
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"path\":\"/x\"}\n{not json\n"), 0o644)
	noSlash := filepath.Join(dir, "noslash.jsonl")
	os.WriteFile(noSlash, []byte(`{"path":"x"}`+"\n"), 0o644)
	negative := filepath.Join(dir, "neg.jsonl")
	os.WriteFile(negative, []byte(`{"at_us":-1,"path":"/x"}`+"\n"), 0o644)
	out := filepath.Join(dir, "out.jsonl")
	cases := map[string][]string{
		"no args":        {},
		"no -in":         {"-base", "http://127.0.0.1:1", "-out", out},
		"bad mode":       {"-base", "http://127.0.0.1:1", "-in", good, "-out", out, "-mode", "half"},
		"bad base":       {"-base", "127.0.0.1:1", "-in", good, "-out", out},
		"missing input":  {"-base", "http://127.0.0.1:1", "-in", filepath.Join(dir, "nope"), "-out", out},
		"malformed line": {"-base", "http://127.0.0.1:1", "-in", bad, "-out", out},
		"relative path":  {"-base", "http://127.0.0.1:1", "-in", noSlash, "-out", out},
		"negative at_us": {"-base", "http://127.0.0.1:1", "-in", negative, "-out", out},
		"zero conc":      {"-base", "http://127.0.0.1:1", "-in", good, "-out", out, "-mode", "closed", "-concurrency", "0"},
		"unknown flag":   {"-base", "http://127.0.0.1:1", "-in", good, "-out", out, "-rate", "5"},
		"unwritable out": {"-base", "http://127.0.0.1:1", "-in", good, "-out", filepath.Join(dir, "no", "dir", "out")},
	}
	for name, args := range cases {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%s: exit %d, want %d (stderr %q)", name, code, exitUsage, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("%s: wrote to stdout: %q", name, stdout.String())
		}
	}
}

func TestParseSkipsBlankLinesAndKeepsOrder(t *testing.T) {
	in := "\n" + `{"at_us":5,"method":"POST","path":"/a","body":"\u0000\"x\""}` + "\n  \n" +
		`{"at_us":1,"path":"/b?q=1","headers":{"content-type":"text/plain"}}` // no final newline
	reqs, err := readRequests(strings.NewReader(in), "http://h:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 2 {
		t.Fatalf("got %d requests", len(reqs))
	}
	if reqs[0].atUs != 5 || reqs[0].method != "POST" || reqs[0].url.String() != "http://h:1/a" || string(reqs[0].body) != "\x00\"x\"" {
		t.Errorf("first: %+v", reqs[0])
	}
	if reqs[1].method != "GET" || reqs[1].url.RawQuery != "q=1" || reqs[1].header.Get("Content-Type") != "text/plain" || reqs[1].host != "h:1" {
		t.Errorf("second: %+v", reqs[1])
	}
	if _, err := readRequests(strings.NewReader(`{"path":"/a"}`+"\n"+`{"path":"/b","headers":{"X":"a\r\nb"}}`), "http://h:1"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad header value: err %v", err)
	}
}

func TestProgressLine(t *testing.T) {
	got := progressLine("loadgen pipeline@500/s", 12*time.Second, 6000, 15000, 5990, 0)
	want := "[loadgen pipeline@500/s] 12.0s sent 6000/15000 done 5990 in flight 10 errors 0\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPercentile(t *testing.T) {
	v := make([]int64, 100)
	for i := range v {
		v[i] = int64(i + 1)
	}
	if p := percentile(v, 0.5); p != 50 {
		t.Errorf("p50 = %d", p)
	}
	if p := percentile(v, 0.99); p != 99 {
		t.Errorf("p99 = %d", p)
	}
	if p := percentile([]int64{7}, 0.99); p != 7 {
		t.Errorf("single p99 = %d", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Errorf("empty = %d", p)
	}
}

func TestEmptyInput(t *testing.T) {
	ro := runLoadgen(t, "http://127.0.0.1:1", nil)
	if ro.exit != exitOK {
		t.Fatalf("exit %d: %s", ro.exit, ro.stderr)
	}
	if num(t, ro.summary, "requests") != 0 {
		t.Errorf("summary %v", ro.summary)
	}
}
