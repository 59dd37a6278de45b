// Command loadgen is a low-CPU HTTP load generator for the benchmark.
//
// It reads a file of pre-built requests (JSON lines), sends them to one base
// URL either open-loop (each request at its scheduled offset, whatever is
// still outstanding; latency counted from the scheduled time) or closed-loop
// (a fixed number of requests in flight), writes one result line per request
// in input order, and prints a one-line JSON summary on stdout.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"syscall"
	"time"
)

const (
	exitOK    = 0
	exitRun   = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program: it parses args, executes the run and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
		}
		return exitUsage
	}

	base, err := parseBase(cfg.base)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitUsage
	}
	f, err := os.Open(cfg.in)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitUsage
	}
	reqs, err := readRequests(f, base)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %s: %v\n", cfg.in, err)
		return exitUsage
	}
	out, err := os.Create(cfg.out)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitUsage
	}

	// Collect garbage less often than by default: a little more memory for
	// less CPU during the run.
	old := debug.SetGCPercent(200)
	defer debug.SetGCPercent(old)

	if cfg.procs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(cfg.procs))
	}
	r := newRunner(cfg, reqs)
	ruBefore := rusage()
	r.run(stderr)
	ruAfter := rusage()

	if err := writeResults(out, r.res); err != nil {
		out.Close()
		fmt.Fprintf(stderr, "loadgen: writing %s: %v\n", cfg.out, err)
		return exitRun
	}
	if err := out.Close(); err != nil {
		fmt.Fprintf(stderr, "loadgen: writing %s: %v\n", cfg.out, err)
		return exitRun
	}

	s := summarize(r, rusage())
	s.CPURunUserS = round6(ruAfter.user - ruBefore.user)
	s.CPURunSysS = round6(ruAfter.sys - ruBefore.sys)
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return exitRun
	}
	return exitOK
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.base, "base", "", "base URL, e.g. http://127.0.0.1:8080 (required)")
	fs.StringVar(&cfg.in, "in", "", "request file, JSON lines (required)")
	fs.StringVar(&cfg.out, "out", "", "result file, JSON lines in input order (required)")
	fs.StringVar(&cfg.mode, "mode", modeOpen, "open (send at at_us) or closed (fixed concurrency)")
	fs.IntVar(&cfg.concurrency, "concurrency", 32, "closed mode: requests in flight")
	fs.IntVar(&cfg.maxConns, "max-conns", 1024, "max connections to the host (0 = unlimited)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "per-request timeout, whole exchange (0 = none)")
	fs.DurationVar(&cfg.startDelay, "start-delay", 200*time.Millisecond, "delay between loading and the start of the clock")
	fs.StringVar(&cfg.label, "label", "", "text shown in progress lines and the summary")
	fs.IntVar(&cfg.procs, "procs", 2, "OS threads running Go code at once (GOMAXPROCS; 0 = one per CPU)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: loadgen -base URL -in requests.jsonl -out results.jsonl [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case cfg.base == "" || cfg.in == "" || cfg.out == "":
		return cfg, errors.New("-base, -in and -out are required")
	case cfg.mode != modeOpen && cfg.mode != modeClosed:
		return cfg, fmt.Errorf("bad -mode %q: want open or closed", cfg.mode)
	case cfg.concurrency < 1:
		return cfg, errors.New("-concurrency must be at least 1")
	case cfg.maxConns < 0:
		return cfg, errors.New("-max-conns must be 0 (unlimited) or more")
	case cfg.timeout < 0:
		return cfg, errors.New("-timeout must not be negative")
	case cfg.procs < 0:
		return cfg, errors.New("-procs must be 0 (one per CPU) or more")
	case cfg.startDelay < 0:
		return cfg, errors.New("-start-delay must not be negative")
	}
	return cfg, nil
}

// outLine is one line of the result file.
type outLine struct {
	I      int    `json:"i"`
	Code   int    `json:"code"`
	LatUs  int64  `json:"lat_us"`
	LateUs int64  `json:"late_us"`
	Err    string `json:"err"`
	Body   string `json:"body"`
}

func writeResults(w io.Writer, res []result) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range res {
		x := &res[i]
		if err := enc.Encode(outLine{I: i, Code: x.code, LatUs: x.latUs, LateUs: x.lateUs, Err: x.err, Body: string(x.body)}); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// summary is the single JSON line printed on stdout at the end of a run.
type summary struct {
	Label           string         `json:"label"`
	Mode            string         `json:"mode"`
	Requests        int            `json:"requests"`
	Responses       int            `json:"responses"`
	TransportErrors int            `json:"transport_errors"`
	Codes           map[string]int `json:"codes"`
	FirstSendS      float64        `json:"first_send_s"`
	DurationS       float64        `json:"duration_s"`
	SendWindowS     float64        `json:"send_window_s"`
	AchievedPerS    float64        `json:"achieved_per_s"`
	LateP50Us       int64          `json:"late_p50_us"`
	LateP99Us       int64          `json:"late_p99_us"`
	LateMaxUs       int64          `json:"late_max_us"`
	MaxInFlight     int64          `json:"max_in_flight"`
	CPUUserS        float64        `json:"cpu_user_s"`
	CPUSysS         float64        `json:"cpu_sys_s"`
	CPURunUserS     float64        `json:"cpu_run_user_s"`
	CPURunSysS      float64        `json:"cpu_run_sys_s"`
	StartUnixS      float64        `json:"start_unix_s"`
}

func summarize(r *runner, end cpuTimes) summary {
	s := summary{
		Label:       r.cfg.label,
		Mode:        r.cfg.mode,
		Requests:    len(r.res),
		Codes:       map[string]int{},
		MaxInFlight: r.maxInFlight.Load(),
		CPUUserS:    round6(end.user),
		CPUSysS:     round6(end.sys),
		StartUnixS:  round6(float64(r.start.UnixMicro()) / 1e6),
	}
	if len(r.res) == 0 {
		return s
	}
	first := time.Duration(math.MaxInt64)
	var last, lastSent time.Duration
	var maxAt int64
	late := make([]int64, 0, len(r.res))
	for i := range r.res {
		x := &r.res[i]
		if x.code != 0 {
			s.Responses++
			s.Codes[strconv.Itoa(x.code)]++
		} else {
			s.TransportErrors++
		}
		first = min(first, x.sentAt)
		last = max(last, x.doneAt)
		lastSent = max(lastSent, x.sentAt)
		maxAt = max(maxAt, r.reqs[i].atUs)
		late = append(late, x.lateUs)
	}
	s.FirstSendS = round6(first.Seconds())
	s.DurationS = round6(last.Seconds())
	if r.cfg.mode == modeOpen {
		s.SendWindowS = round6(float64(maxAt) / 1e6)
	} else {
		s.SendWindowS = round6(lastSent.Seconds())
	}
	if last > 0 {
		s.AchievedPerS = round6(float64(s.Responses) / last.Seconds())
	}
	sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
	s.LateP50Us = percentile(late, 0.50)
	s.LateP99Us = percentile(late, 0.99)
	s.LateMaxUs = late[len(late)-1]
	return s
}

// percentile returns the nearest-rank percentile of sorted values.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(len(sorted)))) - 1
	k = max(0, min(k, len(sorted)-1))
	return sorted[k]
}

type cpuTimes struct{ user, sys float64 }

// rusage returns the CPU time used so far by this process.
func rusage() cpuTimes {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuTimes{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return cpuTimes{user: tv(ru.Utime), sys: tv(ru.Stime)}
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }
