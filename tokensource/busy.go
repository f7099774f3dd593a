package tokensource

// Busy reports whether s has work under way or a token not saved yet: a
// refresh, a save being retried, a Put or a Revoke. Closing a busy Source
// waits for that work (see [Source.Close]) and, if the newest token cannot
// be saved by then, loses it; closing one that is not busy costs nothing.
// Code that closes Sources nobody uses, as a session set does, should wait
// until they are not busy.
//
// Busy is a snapshot: work may start as soon as it returns.
func (s *Source) Busy() bool {
	if s == nil || s.refresher == nil {
		return false
	}
	if st := s.cur.Load(); st != nil && st.unsaved {
		return true
	}
	if s.background.Load() || s.saving.Load() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.turn
}
