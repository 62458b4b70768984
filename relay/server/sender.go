package server

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// sendTimeout bounds one send of an instruction. Instructions are small and
// an agent reads them as they come; one that stops reading fills HTTP/2's
// window, and its send would block for good, holding its stream recorded
// (counted as connected, and against maxStreamsPerCluster). A send that
// takes longer closes the connection.
const sendTimeout = 30 * time.Second

// sendWithin sends in and calls expired, which closes the stream's
// connection and so ends the send, if the send takes longer than timeout.
// A send that returns after expired ran is reported as failed even when
// gRPC took its message: the connection is closing.
func sendWithin(send func(*relayv1.Instruction) error, in *relayv1.Instruction, timeout time.Duration, expired func()) error {
	if expired == nil {
		// The connection is not known (a test's fake stream): nothing
		// could end a blocked send.
		return send(in)
	}
	watchdog := time.AfterFunc(timeout, expired)
	err := send(in)
	if !watchdog.Stop() && err == nil {
		err = fmt.Errorf("the agent read no instruction for %s", timeout)
	}
	return err
}

// sender sends a connect stream's instructions from the stream's queue. Its
// goroutine is started when an instruction is queued and ends when the
// queue is empty, so that an idle stream holds no goroutine for sending:
// with 10,000 agents connected, that is 10,000 goroutines fewer than a pull
// stream each (see make bench).
type sender struct {
	// queue is the stream's instructions and send sends one on it; both
	// are set before the stream is recorded. failed, when set, is called
	// once a send failed or took over sendTimeout: it closes the stream's
	// connection, which ends the handler's Recv and a blocked send.
	// dropped is the stream's wasDropped: once it is, nothing more is sent.
	queue   <-chan *relayv1.Instruction
	send    func(*relayv1.Instruction) error
	failed  func()
	dropped func() bool
	timeout time.Duration

	// running is set while a goroutine drains the queue.
	running atomic.Bool
	// mu is held across each send, by the handler while it sends the
	// first instruction, and by stop: nothing is sent once stop returned,
	// which must be before the handler does.
	mu      sync.Mutex
	stopped bool
	// sendErr is why a send failed; read without mu, so that the handler
	// never waits on a send to learn it.
	sendErr  atomic.Pointer[error]
	failOnce sync.Once
}

// wake makes sure a goroutine sends what is queued. It never blocks.
func (q *sender) wake() {
	if q.running.CompareAndSwap(false, true) {
		go q.drain()
	}
}

// drain sends the queued instructions until the queue is empty, a send
// fails or the sender is stopped.
func (q *sender) drain() {
	for {
	queue:
		for {
			select {
			case in := <-q.queue:
				if !q.sendOne(in) {
					// running stays set: nothing is sent any more.
					return
				}
			default:
				break queue
			}
		}
		q.running.Store(false)
		// An instruction queued after the queue looked empty, and before
		// running was cleared, woke nobody: take it here, unless a new
		// goroutine already does.
		if len(q.queue) == 0 || !q.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// sendOne sends in, unless the sender is stopped or a send failed before;
// it reports whether more may be sent.
func (q *sender) sendOne(in *relayv1.Instruction) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped || q.sendErr.Load() != nil || (q.dropped != nil && q.dropped()) {
		return false
	}
	timeout := q.timeout
	if timeout == 0 {
		timeout = sendTimeout
	}
	if err := sendWithin(q.send, in, timeout, q.fail); err != nil {
		q.sendErr.Store(&err)
		q.fail()
		return false
	}
	return true
}

// fail closes the stream's connection, once.
func (q *sender) fail() {
	q.failOnce.Do(func() {
		if q.failed != nil {
			q.failed()
		}
	})
}

// stop waits for a send under way (sendTimeout at most) and makes sure no
// other starts.
func (q *sender) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
}

// err returns why a send failed; nil when none did.
func (q *sender) err() error {
	if p := q.sendErr.Load(); p != nil {
		return *p
	}
	return nil
}
