package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// outQueue is how many messages may wait for the stream's writer. Senders
// block past it (back pressure on invocations); the reader never sends.
const outQueue = 1024

var (
	// ErrStreamClosed is returned for requests on a stream that ended.
	ErrStreamClosed = errors.New("worker stream closed")
	errClosedByHost = errors.New("stream closed by the host")
)

// NotSentError is a request that never left the host: the stream had ended.
type NotSentError struct{ Err error }

func (e *NotSentError) Error() string { return "not sent: " + e.Err.Error() }
func (e *NotSentError) Unwrap() error { return e.Err }

// Conn is one worker's EventStream. One goroutine reads and dispatches
// responses to their waiters; one goroutine writes, so a slow write never
// holds up reading and senders never write concurrently.
type Conn struct {
	st       rpc.FunctionRpc_EventStreamServer
	workerID string
	out      chan *rpc.StreamingMessage
	done     chan struct{}
	once     sync.Once
	err      error

	mu      sync.Mutex
	waiters map[string]chan *rpc.StreamingMessage
	onLog   func(*rpc.RpcLog)
	onOther func(*rpc.StreamingMessage)
}

func newConn(st rpc.FunctionRpc_EventStreamServer, workerID string) *Conn {
	return &Conn{
		st:       st,
		workerID: workerID,
		out:      make(chan *rpc.StreamingMessage, outQueue),
		done:     make(chan struct{}),
		waiters:  map[string]chan *rpc.StreamingMessage{},
	}
}

// serve runs the reader and the writer until the stream ends, by the worker,
// an error or Close. Returning ends the gRPC call, which unblocks the reader.
func (c *Conn) serve() error {
	go c.write()
	go c.read()
	<-c.done
	return c.err
}

func (c *Conn) read() {
	for {
		m, err := c.st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrStreamClosed
			}
			c.close(err)
			return
		}
		c.dispatch(m)
	}
}

func (c *Conn) write() {
	for {
		select {
		case m := <-c.out:
			if err := c.st.Send(m); err != nil {
				c.close(fmt.Errorf("send to worker: %w", err))
				return
			}
		case <-c.done:
			return
		case <-c.st.Context().Done():
			c.close(ErrStreamClosed)
			return
		}
	}
}

// close ends the stream with err and fails every waiter.
func (c *Conn) close(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
	})
}

// Close ends the stream from the host side.
func (c *Conn) Close() { c.close(errClosedByHost) }

// Done is closed when the stream has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the stream ended.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// SetHandlers sets the callbacks for RpcLog messages and for messages that
// answer no request. They run on the reader goroutine and must not block.
func (c *Conn) SetHandlers(onLog func(*rpc.RpcLog), onOther func(*rpc.StreamingMessage)) {
	c.mu.Lock()
	c.onLog, c.onOther = onLog, onOther
	c.mu.Unlock()
}

// responseKey names the request a worker message answers.
func responseKey(m *rpc.StreamingMessage) string {
	switch x := m.Content.(type) {
	case *rpc.StreamingMessage_WorkerInitResponse:
		return "init"
	case *rpc.StreamingMessage_FunctionMetadataResponse:
		return "metadata"
	case *rpc.StreamingMessage_FunctionLoadResponse:
		return "load:" + x.FunctionLoadResponse.GetFunctionId()
	case *rpc.StreamingMessage_FunctionEnvironmentReloadResponse:
		return "reload"
	case *rpc.StreamingMessage_InvocationResponse:
		return "inv:" + x.InvocationResponse.GetInvocationId()
	case *rpc.StreamingMessage_WorkerStatusResponse:
		return "status"
	}
	return ""
}

func (c *Conn) dispatch(m *rpc.StreamingMessage) {
	if lg := m.GetRpcLog(); lg != nil {
		c.mu.Lock()
		onLog := c.onLog
		c.mu.Unlock()
		if onLog != nil {
			onLog(lg)
		}
		return
	}
	if coll := m.GetFunctionLoadResponseCollection(); coll != nil {
		for _, r := range coll.FunctionLoadResponses {
			c.dispatch(&rpc.StreamingMessage{Content: &rpc.StreamingMessage_FunctionLoadResponse{FunctionLoadResponse: r}})
		}
		return
	}
	key := responseKey(m)
	c.mu.Lock()
	ch, ok := c.waiters[key]
	if ok {
		delete(c.waiters, key)
	}
	onOther := c.onOther
	c.mu.Unlock()
	switch {
	case ok:
		ch <- m
	case onOther != nil:
		onOther(m)
	}
}

// Send queues m for the writer. It blocks while the queue is full, until ctx
// is done or the stream ends.
func (c *Conn) Send(ctx context.Context, m *rpc.StreamingMessage) error {
	select {
	case <-c.done: // a closed stream takes nothing more, even with room in the queue
		return c.err
	default:
	}
	select {
	case c.out <- m:
		return nil
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Request sends m and waits for the worker message answering key.
func (c *Conn) Request(ctx context.Context, key string, m *rpc.StreamingMessage) (*rpc.StreamingMessage, error) {
	ch := make(chan *rpc.StreamingMessage, 1)
	c.mu.Lock()
	c.waiters[key] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiters[key] == ch {
			delete(c.waiters, key)
		}
		c.mu.Unlock()
	}()
	if err := c.Send(ctx, m); err != nil {
		if ctx.Err() == nil {
			return nil, &NotSentError{Err: err}
		}
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-c.done:
		return nil, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
