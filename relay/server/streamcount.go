package server

// openStreams returns how many streams of cluster are open on this
// replica, push and pull together.
func (c *connections) openStreams(cluster string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams(cluster))
}
