package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/tokencodec"
)

// TokenStore is the shape of a store that keeps bare tokens and cannot
// write conditionally: a database table or secret manager written before
// records had generations, or by someone else. [FromTokenStore] turns one
// into a Store.
type TokenStore interface {
	Load(ctx context.Context, key string) (*oauth2.Token, error) // ErrNotFound when nothing is stored
	Save(ctx context.Context, key string, t *oauth2.Token) error
	Delete(ctx context.Context, key string) error
}

// recordField is the extra field of a token, stored through a TokenStore,
// that carries the rest of its record.
const recordField = "tokenkeep_record"

// endedTokenType marks the token that stands for an ended record.
const endedTokenType = "tokenkeep-ended"

// FromTokenStore returns a Store that keeps records in ts, as tokens whose
// extra field "tokenkeep_record" holds the generation, the state and the
// session's metadata. An ended session is kept as a token of type
// "tokenkeep-ended" with no access or refresh token. A token stored without
// that field, by an older program, reads as generation 1. If ts implements
// Locker or Lister, so does the returned Store.
//
// The guarantee is weaker than a native store's: the generation is read and
// compared, and the token then saved, in two calls that ts cannot make
// atomic. Within the process the returned Store serialises its writes of a
// key. Across processes, writes are ordered only while the writers hold
// ts's lock, as a tokensource.Source does for every write when ts is a
// Locker; a writer that does not hold it can overwrite a newer record.
func FromTokenStore(ts TokenStore) Store {
	a := &tokenStore{ts: ts}
	l, isLocker := ts.(Locker)
	ls, isLister := ts.(Lister)
	switch {
	case isLocker && isLister:
		return &struct {
			*tokenStore
			Locker
			Lister
		}{a, l, ls}
	case isLocker:
		return &struct {
			*tokenStore
			Locker
		}{a, l}
	case isLister:
		return &struct {
			*tokenStore
			Lister
		}{a, ls}
	}
	return a
}

type tokenStore struct {
	ts    TokenStore
	locks lockSet // in-process write serialisation only
}

type recordMeta struct {
	Generation    uint64     `json:"gen"`
	State         string     `json:"state"`
	Reason        string     `json:"reason,omitempty"`
	LifetimeMS    int64      `json:"lifetime_ms,omitempty"`
	RetryAfter    *time.Time `json:"retry_after,omitempty"`
	RefreshExpiry *time.Time `json:"refresh_expiry,omitempty"`
}

func (a *tokenStore) Load(ctx context.Context, key string) (*Record, error) {
	t, err := a.ts.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("storage: token store entry %q: nil token: %w", key, ErrCorrupt)
	}
	extra := tokencodec.Extras(t)
	raw, ok := extra[recordField]
	if !ok {
		return legacyRecord(tokencodec.Clone(t)), nil
	}
	delete(extra, recordField)
	var m recordMeta
	b, err := json.Marshal(raw)
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: token store entry %q: %w", key, errFormat("record field of the wrong shape"))
	}
	r := &Record{Generation: m.Generation, Reason: m.Reason, Lifetime: time.Duration(m.LifetimeMS) * time.Millisecond}
	if m.RetryAfter != nil {
		r.RetryAfter = *m.RetryAfter
	}
	if m.RefreshExpiry != nil {
		r.RefreshExpiry = *m.RefreshExpiry
	}
	switch m.State {
	case "live":
		r.State, r.Token = Live, tokencodec.WithExtras(t, extra)
	case "ended":
		r.State = Ended
	default:
		return nil, fmt.Errorf("storage: token store entry %q: %w", key, errFormat("record state is neither live nor ended"))
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("storage: token store entry %q: %w", key, errFormat("%v", err))
	}
	return r, nil
}

func (a *tokenStore) Save(ctx context.Context, key string, r *Record) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("storage: token store entry %q: refusing to save: %w", key, err)
	}
	m := recordMeta{Generation: r.Generation, State: r.State.String(), Reason: r.Reason, LifetimeMS: r.Lifetime.Milliseconds()}
	if !r.RetryAfter.IsZero() {
		m.RetryAfter = &r.RetryAfter
	}
	if !r.RefreshExpiry.IsZero() {
		m.RefreshExpiry = &r.RefreshExpiry
	}
	var meta map[string]any
	b, _ := json.Marshal(m)
	json.Unmarshal(b, &meta)
	t := &oauth2.Token{TokenType: endedTokenType}
	if r.Token != nil {
		t = r.Token
	}
	extra := tokencodec.Extras(t)
	if extra == nil {
		extra = make(map[string]any, 1)
	}
	extra[recordField] = meta
	t = tokencodec.WithExtras(t, extra)
	return a.locks.write(ctx, key, "", false, func() error {
		cur, err := generationOf(a.Load(ctx, key))
		if err != nil {
			return err
		}
		if err := checkGeneration(cur, r); err != nil {
			return fmt.Errorf("storage: token store entry %q: %w", key, err)
		}
		return a.ts.Save(ctx, key, t)
	})
}

func (a *tokenStore) Delete(ctx context.Context, key string) error {
	return a.locks.write(ctx, key, "", false, func() error { return a.ts.Delete(ctx, key) })
}
