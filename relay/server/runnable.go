package server

// leaderLease is the Lease the relay-server replicas elect a leader with.
const leaderLease = "relay-server"
