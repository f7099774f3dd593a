package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// State says whether a stored session can still be used.
type State uint8

const (
	// Live: the record holds the session's token.
	Live State = iota + 1
	// Ended: the session was revoked, logged out or refused by the provider.
	// The record holds no token and stays until a new login is saved over
	// it (a tombstone), so that no process brings the session back.
	Ended
)

func (s State) String() string {
	switch s {
	case Live:
		return "live"
	case Ended:
		return "ended"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Record is one version of a stored session.
//
// Formatting a Record (with any fmt verb, String, GoString or slog) shows
// its generation, state and times, never the token.
type Record struct {
	// Generation counts the writes of the entry: the first record saved
	// under a key is generation 1, and every later write adds one.
	Generation uint64
	// State is Live or Ended.
	State State
	// Reason says why an ended session ended ("revoked", "refused by the
	// provider: invalid_grant"), in words that are safe to print. Empty for
	// a live session.
	Reason string
	// Token is the session's token; nil when the session ended.
	Token *oauth2.Token
	// Lifetime is the lifetime the provider granted when Token was issued,
	// fixed when it was received; zero when unknown.
	Lifetime time.Duration
	// RetryAfter is the moment before which the provider asked not to be
	// called for this session (429 or 503 with Retry-After); zero for none.
	RetryAfter time.Time
	// RefreshExpiry is when the refresh token dies if it is not used
	// (the provider's refresh_expires_in, or a configured idle lifetime);
	// zero when unknown.
	RefreshExpiry time.Time
}

// NewRecord returns the live record for t that follows generation prev.
func NewRecord(prev uint64, t *oauth2.Token) *Record {
	return &Record{Generation: prev + 1, State: Live, Token: tokencodec.Clone(t)}
}

// Clone returns a deep copy of r. Clone of nil is nil.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Token = tokencodec.Clone(r.Token)
	return &c
}

// Validate reports what makes r unfit to save.
func (r *Record) Validate() error {
	switch {
	case r == nil:
		return errors.New("nil record")
	case r.Generation == 0:
		return errors.New("record generation 0; the first generation is 1")
	case r.State == Live && r.Token == nil:
		return errors.New("live record without a token")
	case r.State == Live && r.Token.AccessToken == "" && r.Token.RefreshToken == "":
		return errors.New("live record whose token has neither access nor refresh token")
	case r.State == Ended && r.Token != nil:
		return errors.New("ended record holding a token")
	case r.State != Live && r.State != Ended:
		return fmt.Errorf("record state %d is neither live nor ended", uint8(r.State))
	case r.Lifetime < 0:
		return errors.New("negative lifetime")
	}
	return nil
}

// String describes r without its token.
func (r Record) String() string {
	s := fmt.Sprintf("storage.Record{generation: %d, state: %s", r.Generation, r.State)
	if r.Reason != "" {
		s += fmt.Sprintf(", reason: %q", r.Reason)
	}
	if r.Token != nil && !r.Token.Expiry.IsZero() {
		s += ", expiry: " + r.Token.Expiry.UTC().Format(time.RFC3339)
	}
	return s + "}"
}

// GoString is String, so that %#v prints no token either.
func (r Record) GoString() string { return r.String() }

// Format implements fmt.Formatter: every verb prints String.
func (r Record) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", r.String())
		return
	}
	f.Write([]byte(r.String()))
}

// LogValue implements slog.LogValuer without the token.
func (r Record) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Uint64("generation", r.Generation), slog.String("state", r.State.String())}
	if r.Reason != "" {
		attrs = append(attrs, slog.String("reason", r.Reason))
	}
	return slog.GroupValue(attrs...)
}

// generationOf returns the generation of what a Load returned: 0 when
// nothing is stored, and Load's error when the entry cannot be read.
func generationOf(r *Record, err error) (uint64, error) {
	switch {
	case err == nil:
		return r.Generation, nil
	case errors.Is(err, ErrNotFound):
		return 0, nil
	}
	return 0, err
}

// checkGeneration returns the error a store gives when r may not follow the
// stored generation cur.
func checkGeneration(cur uint64, r *Record) error {
	if r.Generation != cur+1 {
		return fmt.Errorf("%w: stored generation %d, write derived from %d", ErrConflict, cur, r.Generation-1)
	}
	return nil
}

// maxLifetimeMS is the longest lifetime, in milliseconds, that a
// time.Duration holds.
const maxLifetimeMS = math.MaxInt64 / int64(time.Millisecond)

// recordVersion is the version of the record encoding, which is also the
// file format version that carries it.
const recordVersion = 2

// recordWire is the stored form of a Record. The token keeps its own
// encoding (tokencodec), so that every field the provider sent survives.
type recordWire struct {
	V             int             `json:"v"`
	Generation    uint64          `json:"gen"`
	State         string          `json:"state"`
	Reason        string          `json:"reason,omitempty"`
	Token         json.RawMessage `json:"token,omitempty"`
	LifetimeMS    int64           `json:"lifetime_ms,omitempty"`
	RetryAfter    *time.Time      `json:"retry_after,omitempty"`
	RefreshExpiry *time.Time      `json:"refresh_expiry,omitempty"`
}

// encodeRecord returns the stored form of r, which must be valid.
func encodeRecord(r *Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	w := recordWire{V: recordVersion, Generation: r.Generation, State: r.State.String(), Reason: r.Reason,
		LifetimeMS: r.Lifetime.Milliseconds()}
	if r.Token != nil {
		b, err := tokencodec.Encode(r.Token)
		if err != nil {
			return nil, err
		}
		w.Token = b
	}
	if !r.RetryAfter.IsZero() {
		t := r.RetryAfter.UTC()
		w.RetryAfter = &t
	}
	if !r.RefreshExpiry.IsZero() {
		t := r.RefreshExpiry.UTC()
		w.RefreshExpiry = &t
	}
	return json.Marshal(w)
}

// decodeRecord parses the output of encodeRecord. Errors match ErrCorrupt
// and never quote the input.
func decodeRecord(b []byte) (*Record, error) {
	var w recordWire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, errFormat("record is not valid JSON of the expected shape")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errFormat("record is followed by other data")
	}
	if w.V != recordVersion {
		return nil, errFormat("record version %d is not supported (this build reads version %d)", w.V, recordVersion)
	}
	if w.LifetimeMS < 0 || w.LifetimeMS > maxLifetimeMS {
		return nil, errFormat("record lifetime out of range")
	}
	r := &Record{Generation: w.Generation, Reason: w.Reason, Lifetime: time.Duration(w.LifetimeMS) * time.Millisecond}
	switch w.State {
	case "live":
		r.State = Live
	case "ended":
		r.State = Ended
	default:
		return nil, errFormat("record state is neither live nor ended")
	}
	if len(w.Token) > 0 {
		t, err := tokencodec.Decode(w.Token)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, ErrCorrupt)
		}
		r.Token = t
	}
	if w.RetryAfter != nil {
		r.RetryAfter = *w.RetryAfter
	}
	if w.RefreshExpiry != nil {
		r.RefreshExpiry = *w.RefreshExpiry
	}
	if err := r.Validate(); err != nil {
		return nil, errFormat("%v", err)
	}
	return r, nil
}

// legacyRecord wraps a token stored by format version 1, which had no
// generations: it counts as generation 1, so the next write is 2.
func legacyRecord(t *oauth2.Token) *Record {
	return &Record{Generation: 1, State: Live, Token: t}
}

// SaveToken stores t under key as a new live generation, whatever the entry
// holds, re-reading after each conflict. It is for logins made outside a
// session source, tools and tests; a tokensource.Source saves through its
// own conditional writes.
func SaveToken(ctx context.Context, s Store, key string, t *oauth2.Token) error {
	if t == nil {
		return fmt.Errorf("storage: save %q: refusing to save a nil token", key)
	}
	for {
		gen, err := generationOf(s.Load(ctx, key))
		switch {
		case errors.Is(err, ErrCorrupt):
			return fmt.Errorf("storage: save %q: the entry cannot be read, so it cannot be replaced in order; delete it first: %w", key, err)
		case err != nil:
			return err
		}
		err = s.Save(ctx, key, NewRecord(gen, t))
		if !errors.Is(err, ErrConflict) {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// LoadToken returns the token of the live session stored under key. An
// ended session is reported with an error matching ErrNotFound that says
// it ended.
func LoadToken(ctx context.Context, s Store, key string) (*oauth2.Token, error) {
	r, err := s.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	if r.State != Live {
		return nil, fmt.Errorf("storage: entry %q: session ended (%s): %w", key, r.Reason, ErrNotFound)
	}
	return r.Token, nil
}
