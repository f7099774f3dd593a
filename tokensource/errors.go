package tokensource

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeep/tokenkeep/internal/oauthwire"
	"github.com/tokenkeep/tokenkeep/storage"
)

// ErrReauthRequired means the session cannot be renewed without the user:
// the provider rejected the refresh token or the client (invalid_grant,
// invalid_client, unauthorized_client), the session was revoked, nothing is
// stored, or the key protecting stored tokens is lost. Errors matching it
// wrap the provider's *oauth2.RetrieveError when there is one.
//
// A Source that returned it keeps returning it, without calling the
// provider, until Put stores a new login or another process sharing the
// store does.
var ErrReauthRequired = errors.New("tokensource: re-authentication required")

// ErrClosed is returned by a Source after Close.
var ErrClosed = errors.New("tokensource: source closed")

// ErrNotSaved is matched by the error of a refresh (or Put) whose token
// could not be saved. The token is still served from memory and saving is
// retried in the background; Close makes a last attempt and reports its
// outcome. Until a save succeeds, a crash loses the session.
var ErrNotSaved = errors.New("tokensource: token not saved")

// ErrInDoubt is matched by the error of a refresh attempt whose request
// reached the provider without an answer coming back: the provider may have
// redeemed the refresh token and issued one that never arrived. The Source
// reports it (an InDoubt event and a log record) before it retries with
// the same refresh token — the only token it has — which providers that
// allow a short reuse interval accept, and providers that do not answer
// with invalid_grant, ending the session.
var ErrInDoubt = oauthwire.ErrInDoubt

// BackOffError reports that the provider asked not to be called for the
// session before Until (HTTP 429 or 503 with Retry-After). No request is
// sent before then, by this Source or, through the store, by any other.
type BackOffError struct {
	Key   string
	Until time.Time
	Err   error // the provider's answer that asked for it; may be nil
}

func (e *BackOffError) Error() string {
	return fmt.Sprintf("tokensource: refresh %q: the provider asked to wait until %s", e.Key, e.Until.UTC().Format(time.RFC3339))
}

func (e *BackOffError) Unwrap() error { return e.Err }

// rollbackError reports a stored generation lower than one already seen:
// someone put an older copy of the entry back.
type rollbackError struct {
	key       string
	got, seen uint64
}

func (e *rollbackError) Error() string {
	return fmt.Sprintf("tokensource: %q: the store went back to generation %d after generation %d was seen; an older copy of the entry was put back (rollback)", e.key, e.got, e.seen)
}

func (e *rollbackError) Unwrap() error { return storage.ErrCorrupt }

// reauthError is a cause that needs the user, described by msg.
type reauthError struct {
	msg string
	err error // what made it so; may be nil
}

func (e *reauthError) Error() string        { return e.msg }
func (e *reauthError) Unwrap() error        { return e.err }
func (e *reauthError) Is(target error) bool { return target == ErrReauthRequired }

// redacted stands for a secret in printed text.
const redacted = "[REDACTED]"

// secretList holds the token values an error must redact from the messages
// it prints. It prints as [REDACTED] through every fmt verb and slog
// handler, and it keeps its values behind a pointer, because fmt and
// encoding/json do not call the methods of an unexported struct field:
// reflection finds only an address there.
type secretList struct{ p *[]string }

// hide returns a secretList of the non-empty secrets.
func hide(secrets []string) secretList {
	var l []string
	for _, s := range secrets {
		if s != "" {
			l = append(l, s)
		}
	}
	if len(l) == 0 {
		return secretList{}
	}
	return secretList{p: &l}
}

// values returns the secrets, for redact.
func (l secretList) values() []string {
	if l.p == nil {
		return nil
	}
	return *l.p
}

func (secretList) String() string                { return redacted }
func (secretList) GoString() string              { return redacted }
func (secretList) Format(f fmt.State, verb rune) { formatAs(f, verb, redacted) }
func (secretList) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (secretList) MarshalText() ([]byte, error)  { return []byte(redacted), nil }

// formatAs writes s, quoted for %q, whatever the verb and flags: what a
// value that holds a secret prints instead of its fields.
func formatAs(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	io.WriteString(f, s)
}

// RefreshError reports a failed refresh. Its message never holds a token
// value, and neither does anything fmt, slog or encoding/json print of it,
// with any verb or handler: they print the message. Err is the error as the
// Refresher returned it and may quote the provider's answer, tokens
// included: print Err itself with care.
type RefreshError struct {
	Key      string // the Source's store key
	Attempts int    // token endpoint requests made
	Err      error  // the last error; may be *oauth2.RetrieveError
	reauth   bool
	secrets  secretList // token values to redact from messages
}

// Error describes the failure without the provider's raw answer, which may
// quote secrets.
func (e *RefreshError) Error() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tokensource: refresh %q", e.Key)
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " failed after %d attempts", e.Attempts)
	}
	b.WriteString(": ")
	b.WriteString(describe(e.Err, e.secrets.values()))
	if e.reauth {
		b.WriteString(": log in again")
	}
	return b.String()
}

// Unwrap returns the underlying error and, for permanent failures,
// ErrReauthRequired.
func (e *RefreshError) Unwrap() []error {
	switch {
	case e == nil:
		return nil
	case e.reauth:
		return []error{ErrReauthRequired, e.Err}
	}
	return []error{e.Err}
}

// Format implements fmt.Formatter: every verb prints the message, and %#v
// prints GoString. It is defined on the value so that a copy of a
// RefreshError prints no more than a pointer to one.
func (e RefreshError) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		formatAs(f, verb, e.GoString())
		return
	}
	formatAs(f, verb, e.Error())
}

// GoString implements fmt.GoStringer: the fields, with Err replaced by its
// redacted message.
func (e RefreshError) GoString() string {
	var err string
	if e.Err != nil {
		err = fmt.Sprintf("%T(%q)", e.Err, describe(e.Err, e.secrets.values()))
	} else {
		err = "nil"
	}
	return fmt.Sprintf("&tokensource.RefreshError{Key:%q, Attempts:%d, Err:%s}", e.Key, e.Attempts, err)
}

// LogValue implements slog.LogValuer: the message.
func (e RefreshError) LogValue() slog.Value { return slog.StringValue(e.Error()) }

// MarshalText implements encoding.TextMarshaler, so that encoding/json and
// slog's JSON handler print the message, not Err's fields.
func (e RefreshError) MarshalText() ([]byte, error) { return []byte(e.Error()), nil }

// describe renders err for humans, replacing the provider's raw body by its
// status and OAuth error code, and redacting any secret it echoes.
func describe(err error, secrets []string) string {
	var s string
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		s = "no error"
	case errors.Is(err, ErrReauthRequired) && !errors.As(err, &re):
		s = err.Error()
	case errors.As(err, &re):
		s = "token endpoint answered"
		if re.Response != nil {
			s += " " + re.Response.Status
		}
		if re.ErrorCode != "" {
			s += fmt.Sprintf(" %q", re.ErrorCode)
		}
		if re.ErrorDescription != "" {
			s += fmt.Sprintf(" (%s)", re.ErrorDescription)
		}
	default:
		s = err.Error()
	}
	return redact(s, secrets)
}

// redact removes every non-empty secret from s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
		}
	}
	return s
}

// reauthCodes are the OAuth errors that no retry can cure (RFC 6749
// section 5.2).
var reauthCodes = map[string]bool{
	"invalid_grant":       true,
	"invalid_client":      true,
	"unauthorized_client": true,
}

// needsReauth reports whether err means the grant or the client is dead.
func needsReauth(err error) bool {
	if errors.Is(err, ErrReauthRequired) {
		return true
	}
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && reauthCodes[re.ErrorCode]
}
