package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// slowClientRSSBound is the resident memory the host may reach under the
// slow clients of TestSlowClients (docs/operations.md, "Memory under slow
// clients"). Before bodies were read incrementally, the 80 clients that
// declare 6 MB and send one byte alone made the host allocate 480 MB.
const slowClientRSSBound = 100 << 20

// slowKind is one way a client stalls, and what the host must answer
// before it closes the connection (0: nothing, just the close).
type slowKind struct {
	name  string
	start func(c net.Conn) error
	// dribble, when set, is sent a byte at a time until the connection
	// closes.
	dribble bool
	status  int
}

var slowKinds = []slowKind{
	{name: "headers then one byte", status: http.StatusRequestTimeout, start: func(c net.Conn) error {
		_, err := io.WriteString(c, "POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6000000\r\n\r\nx")
		return err
	}},
	{name: "body dribbled", status: http.StatusRequestTimeout, dribble: true, start: func(c net.Conn) error {
		_, err := io.WriteString(c, "POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
		return err
	}},
	{name: "header dribbled", dribble: true, start: func(c net.Conn) error {
		_, err := io.WriteString(c, "POST /function/echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		return err
	}},
	{name: "huge declared length, tiny body", status: http.StatusRequestEntityTooLarge, start: func(c net.Conn) error {
		_, err := io.WriteString(c, "POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\nx")
		return err
	}},
	{name: "idle keep-alive", start: func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	}},
}

// slowResult is how one slow client ended.
type slowResult struct {
	kind   int
	status int // of the response received before the close; 0: none
	err    error
}

// Hundreds of slow or stalled clients — headers then one byte, a body or a
// header dribbled a byte at a time, a huge declared length, idle
// keep-alive connections — after waves that went away, against
// the real binary: its resident memory
// stays under slowClientRSSBound while another function's calls succeed
// with their latency near normal, and every stalled connection is closed
// at its timeout (short ones here), with a JSON 408 or 413 where a
// response is still possible.
func TestSlowClients(t *testing.T) {
	requirePython(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, `
mqtt: {embedded: false}
http:
  read_header_timeout: 3s
  body_timeout: 3s
  idle_timeout: 3s
functions:
  - {name: echo, handler: index.echo, codedir: "`+testdata(t)+`/functions/kinds", instances: {min: 1}}
  - {name: whoami, handler: index.whoami, codedir: "`+testdata(t)+`/functions/kinds", instances: {min: 1}}
`)
	s := serve(t, cfg)
	hosttest.WaitFor(t, 30*time.Second, "whoami to answer", func() bool {
		status, _, err := post(s.base, "whoami", "")
		return err == nil && status == 200
	})
	pid := s.cmd.Process.Pid
	calls := func(n int) []time.Duration {
		t.Helper()
		var lat []time.Duration
		for range n {
			began := time.Now()
			status, body, err := post(s.base, "whoami", "")
			if err != nil || status != 200 || body != `{"module": "kinds"}` {
				t.Fatalf("whoami: %d %q %v", status, body, err)
			}
			lat = append(lat, time.Since(began))
		}
		slices.Sort(lat)
		return lat
	}
	before := calls(30)
	rssBefore := procStatus(t, pid, "VmRSS")

	const perKind = 80
	// Waves that go away once their bodies are being read: memory freed by
	// one wave and taken again by the next is what made the host grow to
	// gigabytes when it sized bodies by their declared length (the Go
	// runtime zeroes reused memory, so it becomes resident; fresh memory
	// from the kernel does not until written).
	for range 3 {
		var wave []net.Conn
		for range 2 * perKind {
			c, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			if err := slowKinds[0].start(c); err != nil {
				t.Fatal(err)
			}
			wave = append(wave, c)
		}
		hosttest.WaitFor(t, 10*time.Second, "a wave's bodies to be read", func() bool {
			return metricValue(t, s.base, `polyfn_http_body_buffered_bytes`) >= 2*perKind*16<<10
		})
		for _, c := range wave {
			c.Close()
		}
		hosttest.WaitFor(t, 10*time.Second, "a wave's bodies to be given back", func() bool {
			return metricValue(t, s.base, `polyfn_http_body_buffered_bytes`) == 0
		})
	}

	results := make(chan slowResult, perKind*len(slowKinds))
	var wg sync.WaitGroup
	for k, kind := range slowKinds {
		for range perKind {
			c, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := kind.start(c); err != nil {
				t.Fatalf("%s: %v", kind.name, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- slowClient(c, k, kind)
			}()
		}
	}
	// Every body being read holds its first chunk of the budget.
	hosttest.WaitFor(t, 10*time.Second, "the slow bodies to be read", func() bool {
		return metricValue(t, s.base, `polyfn_http_body_buffered_bytes`) >= 2*perKind*16<<10
	})
	during := calls(30)
	rssDuring := procStatus(t, pid, "VmRSS")
	t.Logf("whoami latency before: p50 %s max %s; with %d slow clients: p50 %s max %s",
		before[len(before)/2], before[len(before)-1], perKind*len(slowKinds), during[len(during)/2], during[len(during)-1])

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("slow clients still connected 30s after they stalled (timeouts 3s); metrics:\n%s", scrapeMetrics(t, s.base))
	}
	close(results)
	for r := range results {
		kind := slowKinds[r.kind]
		if r.err != nil || r.status != kind.status {
			t.Errorf("%s: got status %d (%v), want %d then the connection closed", kind.name, r.status, r.err, kind.status)
		}
	}
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("host resident memory: %d MiB before, %d MiB with the slow clients connected, peak %d MiB (bound %d MiB)",
		rssBefore>>20, rssDuring>>20, peak>>20, slowClientRSSBound>>20)
	if peak > slowClientRSSBound {
		t.Errorf("the host's resident memory peaked at %d MiB, above the bound of %d MiB", peak>>20, slowClientRSSBound>>20)
	}
	if p50 := during[len(during)/2]; p50 > max(20*before[len(before)/2], time.Second) {
		t.Errorf("whoami p50 with slow clients %s, before %s: not near normal", p50, before[len(before)/2])
	}
	m := scrapeMetrics(t, s.base)
	if n := metricValue(t, s.base, `polyfn_http_rejected_total{reason="body_timeout"}`); n < 2*perKind {
		t.Errorf("body_timeout rejections: %d, want at least %d:\n%s", n, 2*perKind, m)
	}
	if n := metricValue(t, s.base, `polyfn_http_rejected_total{reason="max_body"}`); n < perKind {
		t.Errorf("max_body rejections: %d, want at least %d:\n%s", n, perKind, m)
	}
}

// slowClient keeps a slow client going (dribbling if its kind does) until
// the host closes the connection, and returns what it answered.
func slowClient(c net.Conn, k int, kind slowKind) slowResult {
	if kind.dribble {
		go func() {
			for {
				time.Sleep(200 * time.Millisecond)
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
	}
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	all, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		return slowResult{kind: k, err: err}
	}
	r := slowResult{kind: k}
	if len(all) > 0 {
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
		if err != nil {
			return slowResult{kind: k, err: fmt.Errorf("not a response: %q", all)}
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.Header.Get("Content-Type") != "application/json" || !bytes.Contains(body, []byte(`"error"`)) {
			return slowResult{kind: k, status: resp.StatusCode, err: fmt.Errorf("not a JSON error: %q", body)}
		}
		r.status = resp.StatusCode
	}
	return r
}

// isReset reports a connection the host reset rather than closed: it did
// close it, with unread bytes of the client in its buffer.
func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// procStatus returns a memory field of /proc/PID/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

func scrapeMetrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue returns the value of one series (name and labels as the
// text format writes them), 0 when it is absent.
func metricValue(t *testing.T, base, series string) int64 {
	t.Helper()
	for _, line := range strings.Split(scrapeMetrics(t, base), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return 0
}
