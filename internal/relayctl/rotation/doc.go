// Package rotation holds relayctl's side of the relay's certificate
// rotations: asking relay-server for one (a merge patch of the RelayTrust's
// spec), saying what it will do and wait for, reading where it stands, and
// judging the RelayTrust status a person or a script is shown. relay-server
// does the rotating; this package only asks and reads.
package rotation
