package discord

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Discord's JSON error codes the client gives a meaning to.
const (
	codeUnknownMember = 10007
	codeUnknownUser   = 10013
)

var (
	// ErrNotMember reports that the user is not a member of the guild (Discord answered 404 with
	// code 10007 Unknown Member or 10013 Unknown User). It is an answer, not a failure.
	ErrNotMember = errors.New("not a member of the guild")

	// ErrRateLimited reports a 429 the client could not wait out within the caller's deadline,
	// or a known rate limit that would have outlasted it; Error.RetryAfter says how long to wait.
	ErrRateLimited = errors.New("rate limited")

	// ErrInvalidID reports an argument that is not a snowflake; nothing was sent to Discord.
	ErrInvalidID = errors.New("invalid snowflake")

	// errMalformed marks a success status whose body is not the expected JSON.
	errMalformed = errors.New("malformed response body")
)

// Error is a failed Discord call. Status is 0 when no HTTP answer arrived.
type Error struct {
	Op         string        // what was attempted, e.g. "get member"
	Status     int           // HTTP status of the last answer, 0 if none
	Code       int           // Discord's JSON error code, 0 if absent
	Message    string        // Discord's error message, if any
	RetryAfter time.Duration // how long Discord asked to wait (429 only)
	Retryable  bool          // whether the same call may succeed later
	Err        error         // underlying cause or sentinel, may be nil
}

// Error describes the failure as "discord: <op>: <cause> (<details>)".
func (e *Error) Error() string {
	cause := e.Message
	if e.Err != nil {
		cause = e.Err.Error()
	}
	if cause == "" {
		cause = strings.ToLower(http.StatusText(e.Status))
	}

	var details []string
	if e.Status != 0 {
		details = append(details, fmt.Sprintf("http %d", e.Status))
	}
	if e.Code != 0 {
		details = append(details, fmt.Sprintf("code %d", e.Code))
	}
	if e.Message != "" && e.Message != cause {
		details = append(details, fmt.Sprintf("%q", e.Message))
	}
	if e.RetryAfter > 0 {
		details = append(details, "retry after "+e.RetryAfter.String())
	}

	msg := "discord: " + e.Op + ": " + cause
	if len(details) > 0 {
		msg += " (" + strings.Join(details, ", ") + ")"
	}
	return msg
}

// Unwrap returns the cause, so errors.Is works with the sentinels of this package.
func (e *Error) Unwrap() error { return e.Err }

// IsRetryable reports whether err is a failure that may go away on its own: a 429, a 5xx, a
// timeout, a broken connection or a garbled answer. A 400, 401, 403 or 404 is final.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Retryable
	}
	return transient(err)
}

// transient reports whether an error without an HTTP answer is worth retrying. The caller
// cancelling is not; a deadline, a refused or reset connection and DNS trouble are.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	_, isURL := errors.AsType[*url.Error](err)
	return isURL
}

// retryableStatus is the status half of IsRetryable.
func retryableStatus(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}
