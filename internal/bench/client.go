package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// client is a lean HTTP/1.1 client on one keep-alive connection: it writes
// each request itself and parses the response with net/http. It spends far
// less CPU per request than http.Client (no connection pool, no per-request
// goroutines), which matters when the load generator shares two cores with
// the host it measures. Not safe for concurrent use: one per goroutine.
type client struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
}

// requestTimeout bounds one request, a 16 MiB echo included.
const requestTimeout = 2 * time.Minute

func newClient(addr string) *client { return &client{addr: addr} }

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// response is what do returns: the status, the body length, and for an
// error status the start of the body.
type response struct {
	status int
	n      int64
	detail string
}

// do sends one request with body (nil: none) and reads the whole response,
// the body into sink (nil: discarded). A transport error closes the
// connection; the next request dials a new one.
func (c *client) do(method, path string, body []byte, sink io.Writer) (response, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
		if err != nil {
			return response{}, err
		}
		c.conn = conn
		c.br = bufio.NewReaderSize(conn, 32<<10)
		c.bw = bufio.NewWriterSize(conn, 4<<10)
	}
	resp, err := c.roundTrip(method, path, body, sink)
	if err != nil {
		c.close()
	}
	return resp, err
}

func (c *client) roundTrip(method, path string, body []byte, sink io.Writer) (response, error) {
	_ = c.conn.SetDeadline(time.Now().Add(requestTimeout))
	bw := c.bw
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(c.addr)
	bw.WriteString("\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	if len(body) > 0 {
		bw.WriteString("\r\nContent-Type: application/octet-stream")
	}
	bw.WriteString("\r\n\r\n")
	if len(body) > 0 {
		if _, err := bw.Write(body); err != nil {
			return response{}, err
		}
	}
	if err := bw.Flush(); err != nil {
		return response{}, err
	}
	hr, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return response{}, err
	}
	r := response{status: hr.StatusCode}
	if r.err() != nil {
		b, _ := io.ReadAll(io.LimitReader(hr.Body, 300))
		r.detail = string(b)
	}
	if sink == nil {
		sink = io.Discard
	}
	n, err := io.Copy(sink, hr.Body)
	r.n += n
	hr.Body.Close()
	if err != nil {
		return r, err
	}
	if hr.Close {
		c.close()
	}
	return r, nil
}

// post sends an empty POST and fails on anything but a 2xx status.
func (c *client) post(path string) error {
	r, err := c.do(http.MethodPost, path, nil, nil)
	if err != nil {
		return err
	}
	return r.err()
}

func (r response) err() error {
	if r.status >= 200 && r.status < 300 {
		return nil
	}
	return fmt.Errorf("HTTP %d: %s", r.status, r.detail)
}

// loadResult is one point of the load generator.
type loadResult struct {
	ok, errors int64
	elapsed    time.Duration
	latencies  durations
	firstError string
}

// load runs conc goroutines, each POSTing to path in a loop on its own
// keep-alive connection. The first warm is not counted; the measured window
// of dur starts after it, once ready reports true (the pool has finished
// scaling up; checked every 10 ms, for at most 30 s). A request counts when
// it completes inside the window.
func load(ctx context.Context, addr, path string, conc int, warm, dur time.Duration, ready func() bool) loadResult {
	var from, to atomic.Int64 // UnixNano; zero until the window is set
	go func() {
		t := time.NewTimer(warm)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			to.Store(1)
			return
		}
		for deadline := time.Now().Add(30 * time.Second); !ready() && time.Now().Before(deadline) && ctx.Err() == nil; {
			time.Sleep(10 * time.Millisecond)
		}
		now := time.Now()
		from.Store(now.UnixNano())
		to.Store(now.Add(dur).UnixNano())
	}()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		res      loadResult
		ok, errs atomic.Int64
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(addr)
			defer c.close()
			lat := make(durations, 0, 4096)
			var first string
			for ctx.Err() == nil {
				t0 := time.Now()
				if end := to.Load(); end != 0 && t0.UnixNano() >= end {
					break
				}
				r, err := c.do(http.MethodPost, path, nil, nil)
				t1 := time.Now()
				if err != nil {
					// A transport error: do not spin on a dead listener.
					time.Sleep(time.Millisecond)
				} else {
					err = r.err()
				}
				if begin, end := from.Load(), to.Load(); begin == 0 || t1.UnixNano() < begin || t1.UnixNano() > end {
					continue
				}
				if err != nil {
					errs.Add(1)
					if first == "" {
						first = err.Error()
					}
					continue
				}
				ok.Add(1)
				lat = append(lat, t1.Sub(t0))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			if res.firstError == "" {
				res.firstError = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.ok, res.errors, res.elapsed = ok.Load(), errs.Load(), dur
	return res
}
