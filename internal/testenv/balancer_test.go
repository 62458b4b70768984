package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// nameServer is a backend that writes its name and a newline to every
// connection, then echoes what it reads until the connection closes.
type nameServer struct {
	name string
	lis  net.Listener
}

func startNameServer(t *testing.T, name string) *nameServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &nameServer{name: name, lis: lis}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := fmt.Fprintln(c, name); err == nil {
					_, _ = io.Copy(c, c)
				}
			}()
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return s
}

func (s *nameServer) addr() string { return s.lis.Addr().String() }

// whoAnswers dials addr and returns the name of the backend that answers,
// and the connection, which the test closes.
func whoAnswers(t *testing.T, addr string) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("connection through the balancer: no backend answered: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return strings.TrimSpace(line), c
}

func names(t *testing.T, addr string, n int) []string {
	t.Helper()
	var got []string
	for range n {
		name, c := whoAnswers(t, addr)
		c.Close()
		got = append(got, name)
	}
	return got
}

func TestBalancer(t *testing.T) {
	t.Run("connections go to each backend in turn, and bytes flow both ways", func(t *testing.T) {
		a, b, c := startNameServer(t, "a"), startNameServer(t, "b"), startNameServer(t, "c")
		lb, err := NewBalancer(a.addr(), b.addr(), c.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer lb.Close()
		if got, want := names(t, lb.Addr(), 6), []string{"a", "b", "c", "a", "b", "c"}; !slices.Equal(got, want) {
			t.Errorf("backends in turn: got %v, want %v", got, want)
		}
		_, conn := whoAnswers(t, lb.Addr())
		if _, err := io.WriteString(conn, "ping\n"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping\n" {
			t.Errorf("echo through the balancer: %q, %v", buf, err)
		}
		// The six closed before end as their closes reach the balancer.
		Eventually(t, "one connection open, to a", 5*time.Second, func() error {
			if got := lb.Open(); got[a.addr()] != 1 || len(got) != 1 {
				return fmt.Errorf("open connections %v, want one to a (%s)", got, a.addr())
			}
			return nil
		})
	})

	t.Run("a backend that refuses the dial is skipped, and one removed or added leaves or joins the turn", func(t *testing.T) {
		a, b, c := startNameServer(t, "a"), startNameServer(t, "b"), startNameServer(t, "c")
		lb, err := NewBalancer(a.addr(), b.addr(), c.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer lb.Close()
		b.lis.Close() // b's process is gone; it is still in the turn
		if got, want := names(t, lb.Addr(), 4), []string{"a", "c", "a", "c"}; !slices.Equal(got, want) {
			t.Errorf("with b dead: got %v, want %v", got, want)
		}
		lb.Remove(b.addr())
		lb.Remove(a.addr())
		if got, want := names(t, lb.Addr(), 2), []string{"c", "c"}; !slices.Equal(got, want) {
			t.Errorf("with a and b removed: got %v, want %v", got, want)
		}
		d := startNameServer(t, "d")
		lb.Add(d.addr())
		lb.Add(d.addr())
		if got := lb.Backends(); !slices.Equal(got, []string{c.addr(), d.addr()}) {
			t.Errorf("backends %v, want c then d once", got)
		}
		if got := names(t, lb.Addr(), 4); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"c", "c", "d", "d"}) {
			t.Errorf("after adding d: got %v, want c and d twice each", got)
		}
	})

	t.Run("a client sees its backend go away, and a connection no backend takes is closed", func(t *testing.T) {
		a := startNameServer(t, "a")
		lb, err := NewBalancer(a.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer lb.Close()
		// A backend that closes the connection after its greeting.
		bye, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer bye.Close()
		go func() {
			for {
				c, err := bye.Accept()
				if err != nil {
					return
				}
				fmt.Fprintln(c, "bye")
				c.Close()
			}
		}()
		lb.Remove(a.addr())
		lb.Add(bye.Addr().String())
		name, conn := whoAnswers(t, lb.Addr())
		if name != "bye" {
			t.Fatalf("answered by %q", name)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read after the backend closed: %d bytes, %v; want EOF", n, err)
		}
		lb.Remove(bye.Addr().String())
		c, err := net.Dial("tcp", lb.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read with no backend: %d bytes, %v; want EOF", n, err)
		}
	})

	t.Run("Close ends every connection and leaves no goroutine behind", func(t *testing.T) {
		a, b := startNameServer(t, "a"), startNameServer(t, "b")
		before := runtime.NumGoroutine()
		lb, err := NewBalancer(a.addr(), b.addr())
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for range 6 {
			_, c := whoAnswers(t, lb.Addr())
			conns = append(conns, c)
		}
		if got := lb.Open(); got[a.addr()] != 3 || got[b.addr()] != 3 {
			t.Errorf("open connections %v, want 3 to each backend", got)
		}
		if err := lb.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for i, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("connection %d after Close: %d bytes, %v; want EOF", i, n, err)
			}
			c.Close()
		}
		if _, err := net.DialTimeout("tcp", lb.Addr(), time.Second); err == nil {
			t.Error("the balancer still accepts after Close")
		}
		// The backends' own goroutines end as their clients go; the
		// balancer's have ended when Close returned.
		Eventually(t, "goroutines back to where they were", 5*time.Second, func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("%d goroutines, %d before the balancer", n, before)
			}
			return nil
		})
	})
}
