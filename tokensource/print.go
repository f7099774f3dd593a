package tokensource

import (
	"fmt"
	"log/slog"
)

// The package's exported types that reach a secret print without it under
// every fmt verb, slog handler and encoding/json: [RefreshError] and
// [Source] print their message or key, a ConfigRefresher its client ID and
// token endpoint, and an Event's LogValue renders Err as its message.

// Format implements fmt.Formatter: every verb prints String. Without it,
// %#v would walk the Source's fields by reflection, reading its locks and
// atomics unsynchronised while a refresh runs.
func (s *Source) Format(f fmt.State, verb rune) { formatAs(f, verb, s.String()) }

// String describes r by its client ID and token endpoint; the client
// secret is left out.
func (r *ConfigRefresher) String() string {
	if r == nil || r.Config == nil {
		return "tokensource.ConfigRefresher{}"
	}
	return fmt.Sprintf("tokensource.ConfigRefresher{ClientID: %q, TokenURL: %q}", r.Config.ClientID, r.Config.Endpoint.TokenURL)
}

// Format implements fmt.Formatter: every verb prints String, so that no
// verb walks into Config and its client secret.
func (r *ConfigRefresher) Format(f fmt.State, verb rune) { formatAs(f, verb, r.String()) }

// LogValue implements slog.LogValuer: the client ID and token endpoint.
func (r *ConfigRefresher) LogValue() slog.Value {
	if r == nil || r.Config == nil {
		return slog.GroupValue()
	}
	return slog.GroupValue(slog.String("client_id", r.Config.ClientID), slog.String("token_url", r.Config.Endpoint.TokenURL))
}

// MarshalText implements encoding.TextMarshaler, so that encoding/json
// prints String rather than Config.
func (r *ConfigRefresher) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// LogValue implements slog.LogValuer: the fields, with Err as its message,
// never the fields of the error behind it.
func (e Event) LogValue() slog.Value {
	return slog.GroupValue(append([]slog.Attr{slog.String("kind", e.Kind.String())}, e.attrs()...)...)
}

// attrs returns e's fields but its kind, as a Source logs them: Err as its
// message only, expiries only when known.
func (e Event) attrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.String("key", e.Key),
		slog.Bool("background", e.Background),
		slog.Int("attempts", e.Attempts),
		slog.Duration("duration", e.Duration),
	}
	if !e.OldExpiry.IsZero() {
		attrs = append(attrs, slog.Time("old_expiry", e.OldExpiry))
	}
	if !e.NewExpiry.IsZero() {
		attrs = append(attrs, slog.Time("new_expiry", e.NewExpiry))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	return attrs
}
