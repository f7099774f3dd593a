package authserver

// RefreshTokenState says what the server knows of a refresh token.
type RefreshTokenState int

const (
	// RefreshUnknown: the server never issued it.
	RefreshUnknown RefreshTokenState = iota
	// RefreshActive: it would be honoured now.
	RefreshActive
	// RefreshRetired: it was rotated away while its session lives on, so
	// a newer refresh token of the session exists: whoever holds only this
	// one lost the newest.
	RefreshRetired
	// RefreshRevoked: its whole session was revoked (RFC 7009, or reuse
	// detection).
	RefreshRevoked
)

func (s RefreshTokenState) String() string {
	switch s {
	case RefreshActive:
		return "active"
	case RefreshRetired:
		return "retired"
	case RefreshRevoked:
		return "revoked"
	}
	return "unknown"
}

// RefreshState reports the state of refresh token rt.
func (s *Server) RefreshState(rt string) RefreshTokenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.refresh[rt]
	switch {
	case !ok:
		return RefreshUnknown
	case t.fam.revoked:
		return RefreshRevoked
	case t.retired:
		return RefreshRetired
	}
	return RefreshActive
}
