module github.com/tokenkeep/tokenkeep

go 1.26.0

require golang.org/x/oauth2 v0.37.0

require (
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
)
