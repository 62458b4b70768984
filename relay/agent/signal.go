package agent

// signal is a one-slot notification between roles: notify never blocks,
// and notifications sent before the receiver looks count as one.
type signal chan struct{}

func newSignal() signal { return make(signal, 1) }

// notify wakes the receiver, or does nothing when it is already due to wake.
func (s signal) notify() {
	select {
	case s <- struct{}{}:
	default:
	}
}
