package tokensource

import (
	"errors"
	"fmt"
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

// RefreshError reports a failed refresh. It never holds a token value.
type RefreshError struct {
	Key      string // the Source's store key
	Attempts int    // token endpoint requests made
	Err      error  // the last error; may be *oauth2.RetrieveError
	reauth   bool
	secrets  []string
}

// Error describes the failure without the provider's raw answer, which may
// quote secrets.
func (e *RefreshError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tokensource: refresh %q", e.Key)
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " failed after %d attempts", e.Attempts)
	}
	b.WriteString(": ")
	b.WriteString(describe(e.Err, e.secrets))
	if e.reauth {
		b.WriteString(": log in again")
	}
	return b.String()
}

// Unwrap returns the underlying error and, for permanent failures,
// ErrReauthRequired.
func (e *RefreshError) Unwrap() []error {
	if e.reauth {
		return []error{ErrReauthRequired, e.Err}
	}
	return []error{e.Err}
}

// describe renders err for humans, replacing the provider's raw body by its
// status and OAuth error code, and redacting any secret it echoes.
func describe(err error, secrets []string) string {
	var s string
	var re *oauth2.RetrieveError
	switch {
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
