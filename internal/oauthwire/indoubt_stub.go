package oauthwire

import (
	"context"
	"errors"
	"time"
)

// Placeholder until the wire branch lands.
var ErrInDoubt = errors.New("in doubt")

func WithSendTimeout(ctx context.Context, d time.Duration) context.Context { return ctx }
