package bench

import (
	"net/http"
	"sync"
	"time"
)

// GroupsCPU is the CPU time of the live processes of the process groups
// pgids (the workers of a pool, with whatever they started), summed.
func GroupsCPU(pgids []int) time.Duration {
	var total time.Duration
	for _, cpu := range groupsCPU(pgids) {
		total += cpu
	}
	return total
}

// Loader keeps conc keep-alive connections to addr and sends POSTs to path
// on them, as the throughput rows' load generator does.
type Loader struct {
	path    string
	clients []*client
}

// NewLoader opens nothing yet: each connection is dialled by its first request.
func NewLoader(addr, path string, conc int) *Loader {
	l := &Loader{path: path}
	for range conc {
		l.clients = append(l.clients, newClient(addr))
	}
	return l
}

// Run sends n requests in all, spread over the connections, each connection
// sending its next request as soon as the last one answered. It returns the
// number of requests that failed and the first error.
func (l *Loader) Run(n int) (failed int, first error) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	per := n / len(l.clients)
	for i, c := range l.clients {
		k := per
		if i < n%len(l.clients) {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range k {
				r, err := c.do(http.MethodPost, l.path, nil, nil)
				if err == nil {
					err = r.err()
				}
				if err != nil {
					mu.Lock()
					failed++
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return failed, first
}

// Close closes every connection.
func (l *Loader) Close() {
	for _, c := range l.clients {
		c.close()
	}
}
