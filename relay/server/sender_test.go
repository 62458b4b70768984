package server

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestSender checks a connect stream's sender: everything queued is sent,
// in order, with no goroutine left once the queue is empty; nothing is sent
// after stop or after a failed send.
func TestSender(t *testing.T) {
	renew := func(i int) *relayv1.Instruction {
		return &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: fmt.Sprint(i)}}}
	}
	reason := func(in *relayv1.Instruction) string { return in.GetRenewNow().GetReason() }

	t.Run("instructions queued from many goroutines are all sent, in queue order, and the goroutine ends", func(t *testing.T) {
		queue := make(chan *relayv1.Instruction, instructionBuffer)
		var mu sync.Mutex
		var sent []string
		q := &sender{queue: queue, send: func(in *relayv1.Instruction) error {
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, reason(in))
			return nil
		}}
		const producers, each = 4, 500
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				for i := range each {
					queue <- renew(p*each + i) // blocks while the queue is full
					q.wake()
				}
			})
		}
		wg.Wait()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(sent)
			mu.Unlock()
			if n == producers*each && !q.running.Load() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d sent, running %v: an instruction was left in the queue", n, producers*each, q.running.Load())
			}
			time.Sleep(time.Millisecond)
		}
		// Each producer's instructions keep their order.
		last := map[int]int{}
		for _, r := range sent {
			var i int
			fmt.Sscan(r, &i)
			p := i / each
			if prev, ok := last[p]; ok && i <= prev {
				t.Fatalf("producer %d: %d sent after %d", p, i, prev)
			}
			last[p] = i
		}
		if len(queue) != 0 {
			t.Errorf("%d instructions left in the queue", len(queue))
		}
	})

	t.Run("nothing is sent after stop", func(t *testing.T) {
		queue := make(chan *relayv1.Instruction, instructionBuffer)
		sent := make(chan string, instructionBuffer)
		q := &sender{queue: queue, send: func(in *relayv1.Instruction) error { sent <- reason(in); return nil }}
		queue <- renew(1)
		q.wake()
		if got := <-sent; got != "1" {
			t.Fatalf("sent %q, want 1", got)
		}
		q.stop()
		queue <- renew(2)
		q.wake()
		select {
		case got := <-sent:
			t.Fatalf("sent %q after stop", got)
		case <-time.After(100 * time.Millisecond):
		}
	})

	t.Run("a failed send closes the connection once and ends sending", func(t *testing.T) {
		queue := make(chan *relayv1.Instruction, instructionBuffer)
		failed, sends := 0, 0
		broken := errors.New("stream broken")
		done := make(chan struct{})
		q := &sender{queue: queue, send: func(*relayv1.Instruction) error { sends++; return broken }, failed: func() { failed++; close(done) }}
		queue <- renew(1)
		queue <- renew(2)
		q.wake()
		<-done
		queue <- renew(3)
		q.wake()
		time.Sleep(50 * time.Millisecond)
		q.stop()
		if failed != 1 || sends != 1 || !errors.Is(q.err(), broken) {
			t.Errorf("failed %d times after %d sends, err %v; want once after one send, %v", failed, sends, q.err(), broken)
		}
	})

	t.Run("a send the agent does not read within the timeout closes the connection, and stop then returns", func(t *testing.T) {
		queue := make(chan *relayv1.Instruction, instructionBuffer)
		unblock := make(chan struct{})
		closedConn := make(chan struct{})
		q := &sender{queue: queue, timeout: 50 * time.Millisecond,
			send:   func(*relayv1.Instruction) error { <-unblock; return errors.New("connection closed") },
			failed: func() { close(closedConn); close(unblock) }}
		queue <- renew(1)
		q.wake()
		select {
		case <-closedConn:
		case <-time.After(10 * time.Second):
			t.Fatal("a blocked send never closed the connection")
		}
		stopped := make(chan struct{})
		go func() { q.stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("stop waited on a blocked send for good")
		}
		if q.err() == nil {
			t.Error("no error for the send that timed out")
		}
	})

	t.Run("nothing is sent once the stream is dropped", func(t *testing.T) {
		queue := make(chan *relayv1.Instruction, instructionBuffer)
		sent := make(chan string, instructionBuffer)
		q := &sender{queue: queue, dropped: func() bool { return true }, send: func(in *relayv1.Instruction) error { sent <- reason(in); return nil }}
		queue <- renew(1)
		q.wake()
		select {
		case got := <-sent:
			t.Fatalf("sent %q on a dropped stream", got)
		case <-time.After(100 * time.Millisecond):
		}
	})
}
