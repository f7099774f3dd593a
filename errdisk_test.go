package tokensource

import (
	"errors"
	"net/http"
	"strconv"

	"golang.org/x/oauth2"
)

var errDiskFull = errors.New("storage: write: no space left on device")

func providerError(status int, code string, header http.Header) error {
	if header == nil {
		header = http.Header{}
	}
	return &oauth2.RetrieveError{Response: &http.Response{StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status), Header: header}, ErrorCode: code}
}
