package server

import (
	"crypto/sha256"
	"crypto/subtle"
)

// tokensEqual compares a presented identity token with the stored one in
// constant time. Both are hashed first so that neither the content nor the
// length of the stored token leaks through timing.
func tokensEqual(presented, stored []byte) bool {
	if len(stored) == 0 {
		return false
	}
	a, b := sha256.Sum256(presented), sha256.Sum256(stored)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
