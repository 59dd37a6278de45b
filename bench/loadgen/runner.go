package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	modeOpen   = "open"
	modeClosed = "closed"
)

// config holds the parsed command line.
type config struct {
	base        string
	in          string
	out         string
	mode        string
	concurrency int
	maxConns    int
	timeout     time.Duration
	startDelay  time.Duration
	label       string
	procs       int
}

// result is the outcome of one request. Times are offsets from the run start.
type result struct {
	code   int
	latUs  int64
	lateUs int64
	err    string
	body   []byte
	sentAt time.Duration
	doneAt time.Duration
}

// runner executes one run over a fixed list of pre-built requests.
type runner struct {
	cfg   config
	tr    *http.Transport
	reqs  []request
	res   []result
	start time.Time

	sent        atomic.Int64
	done        atomic.Int64
	errs        atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
}

// newTransport builds the single keep-alive HTTP/1.1 transport used for the
// whole run. Requests go straight to its RoundTrip: no redirects are followed,
// no cookies kept, and the per-request timeout is a context deadline covering
// the whole exchange up to the end of the response body (as http.Client's
// Timeout would).
func newTransport(cfg config) *http.Transport {
	idle := cfg.maxConns
	if idle <= 0 {
		idle = 1 << 20 // unlimited connections: never close an idle one for lack of room
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   cfg.timeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2: false,
		// A non-nil empty map disables HTTP/2 (including over TLS).
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableCompression:    true,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   idle,
		MaxConnsPerHost:       cfg.maxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
	return tr
}

func newRunner(cfg config, reqs []request) *runner {
	return &runner{
		cfg:  cfg,
		tr:   newTransport(cfg),
		reqs: reqs,
		res:  make([]result, len(reqs)),
	}
}

// run executes all requests and returns when every one has completed.
// progress, if non-nil, receives a status line every second.
func (r *runner) run(progress io.Writer) {
	r.start = time.Now().Add(r.cfg.startDelay)
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			r.reportProgress(progress, stop)
		}()
	}
	if r.cfg.mode == modeClosed {
		r.runClosed()
	} else {
		r.runOpen()
	}
	close(stop)
	pwg.Wait()
	r.tr.CloseIdleConnections()
}

// runOpen sends request i at start+at_us regardless of outstanding responses.
//
// Requests are handed to a pool of long-lived worker goroutines (whose stacks
// stay grown, so no per-request stack growth); when no worker is idle at the
// scheduled time a new one is started, so the schedule never waits for a
// response.
func (r *runner) runOpen() {
	order := make([]int, len(r.reqs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return r.reqs[order[a]].atUs < r.reqs[order[b]].atUs
	})
	type job struct {
		i     int
		sched time.Duration
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	worker := func(j job) {
		defer wg.Done()
		for {
			r.do(j.i, j.sched)
			var ok bool
			if j, ok = <-jobs; !ok {
				return
			}
		}
	}
	for _, i := range order {
		sched := time.Duration(r.reqs[i].atUs) * time.Microsecond
		if d := sched - time.Since(r.start); d > 0 {
			time.Sleep(d)
		}
		j := job{i, sched}
		select {
		case jobs <- j:
		default:
			wg.Add(1)
			go worker(j)
		}
	}
	close(jobs)
	wg.Wait()
}

// runClosed keeps at most cfg.concurrency requests in flight, in input order.
func (r *runner) runClosed() {
	if d := time.Until(r.start); d > 0 {
		time.Sleep(d)
	}
	var next atomic.Int64
	n := int64(len(r.reqs))
	workers := r.cfg.concurrency
	if int64(workers) > n {
		workers = int(n)
	}
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				r.do(int(i), -1)
			}
		}()
	}
	wg.Wait()
}

// do sends request i and records its result. sched is the scheduled send
// offset (open mode) or negative (closed mode: latency counts from the send).
func (r *runner) do(i int, sched time.Duration) {
	q := &r.reqs[i]
	res := &r.res[i]

	sentAt := time.Since(r.start)
	r.sent.Add(1)
	n := r.inFlight.Add(1)
	for {
		m := r.maxInFlight.Load()
		if n <= m || r.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}

	var body []byte
	req := q.newHTTPRequest()
	cancel := context.CancelFunc(nil)
	if r.cfg.timeout > 0 {
		var ctx context.Context
		ctx, cancel = context.WithTimeout(context.Background(), r.cfg.timeout)
		req = req.WithContext(ctx)
	}
	resp, err := r.tr.RoundTrip(req)
	if err == nil {
		res.code = resp.StatusCode
		body, err = readBody(resp)
	}
	if cancel != nil {
		cancel()
	}
	doneAt := time.Since(r.start)
	r.inFlight.Add(-1)

	res.sentAt = sentAt
	res.doneAt = doneAt
	res.body = body
	if sched >= 0 {
		res.latUs = (doneAt - sched).Microseconds()
		res.lateUs = (sentAt - sched).Microseconds()
	} else {
		res.latUs = (doneAt - sentAt).Microseconds()
	}
	if err != nil {
		res.err = classifyError(err)
		r.errs.Add(1)
	}
	r.done.Add(1)
}

// newHTTPRequest builds the *http.Request for q around a fresh reader over
// the pre-built body; it is what http.NewRequest would build, without parsing
// the URL again.
func (q *request) newHTTPRequest() *http.Request {
	u := *q.url
	req := &http.Request{
		Method:     q.method,
		URL:        &u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     q.header,
		Host:       q.host,
	}
	if n := len(q.body); n > 0 {
		body := q.body
		req.ContentLength = int64(n)
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(body)), nil
		}
	} else {
		req.Body = http.NoBody
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	}
	return req
}

// readBody reads the whole response body and closes it.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	if n := resp.ContentLength; n >= 0 && n <= 64<<20 {
		buf := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	return io.ReadAll(resp.Body)
}

// classifyError turns a transport error into a short, stable text.
func classifyError(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	s := strings.TrimSpace(err.Error())
	const maxLen = 160
	if len(s) > maxLen {
		s = s[:maxLen]
	}
	return s
}

func (r *runner) reportProgress(w io.Writer, stop <-chan struct{}) {
	if d := time.Until(r.start); d > 0 {
		select {
		case <-stop:
			return
		case <-time.After(d):
		}
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prefix := "loadgen"
	if r.cfg.label != "" {
		prefix += " " + r.cfg.label
	}
	total := len(r.reqs)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			io.WriteString(w, progressLine(prefix, time.Since(r.start),
				r.sent.Load(), int64(total), r.done.Load(), r.errs.Load()))
		}
	}
}

// progressLine formats one progress line, e.g.
// "[loadgen pipeline@500/s] 12.0s sent 6000/15000 done 5990 in flight 10 errors 0".
func progressLine(prefix string, elapsed time.Duration, sent, total, done, errs int64) string {
	return fmt.Sprintf("[%s] %.1fs sent %d/%d done %d in flight %d errors %d\n",
		prefix, elapsed.Seconds(), sent, total, done, sent-done, errs)
}
