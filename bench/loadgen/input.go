package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// inputLine is one line of the request file as written by the benchmark driver.
type inputLine struct {
	AtUs    int64             `json:"at_us"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// request is a pre-built request: everything except the *http.Request itself,
// which is created at send time around a fresh reader over body.
type request struct {
	atUs   int64
	method string
	url    *url.URL // shared between requests with the same path; copied at send time
	host   string   // value for the Host header: URL host unless the input set one
	header http.Header
	body   []byte
}

// parseBase checks the -base flag and returns it without a trailing slash.
func parseBase(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("bad -base %q: %v", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("bad -base %q: want http://host:port", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("bad -base %q: no query or fragment allowed", base)
	}
	return strings.TrimRight(base, "/"), nil
}

// readRequests parses every line of r (JSON lines; blank lines are skipped)
// into pre-built requests, in input order.
func readRequests(r io.Reader, base string) ([]request, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var reqs []request
	urls := map[string]*url.URL{} // one parsed URL per distinct path, shared
	lineNo := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			lineNo++
			if t := bytes.TrimSpace(line); len(t) > 0 {
				q, perr := parseLine(t, base, urls)
				if perr != nil {
					return nil, fmt.Errorf("line %d: %v", lineNo, perr)
				}
				reqs = append(reqs, q)
			}
		}
		if errors.Is(err, io.EOF) {
			return reqs, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func parseLine(line []byte, base string, urls map[string]*url.URL) (request, error) {
	var in inputLine
	if err := json.Unmarshal(line, &in); err != nil {
		return request{}, err
	}
	if in.AtUs < 0 {
		return request{}, fmt.Errorf("negative at_us %d", in.AtUs)
	}
	method := in.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return request{}, fmt.Errorf("bad method %q", method)
	}
	if !strings.HasPrefix(in.Path, "/") {
		return request{}, fmt.Errorf("path %q must start with /", in.Path)
	}
	u := urls[in.Path]
	if u == nil {
		var err error
		if u, err = url.Parse(base + in.Path); err != nil {
			return request{}, fmt.Errorf("bad path %q: %v", in.Path, err)
		}
		urls[in.Path] = u
	}
	h := make(http.Header, len(in.Headers))
	host := u.Host
	for k, v := range in.Headers {
		if !validToken(k) {
			return request{}, fmt.Errorf("bad header name %q", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return request{}, fmt.Errorf("bad value for header %q", k)
		}
		if strings.EqualFold(k, "Host") {
			host = v
			continue
		}
		h.Set(k, v)
	}
	return request{
		atUs:   in.AtUs,
		method: method,
		url:    u,
		host:   host,
		header: h,
		body:   []byte(in.Body),
	}, nil
}

// validToken reports whether s is a non-empty HTTP token (RFC 9110 tchar*).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
