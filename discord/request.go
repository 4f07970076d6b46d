package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
)

// get sends a GET through discordgo and handles what discordgo is told not to: waiting for
// rate limits within the context's deadline and retrying a 5xx once.
func (c *Client) get(ctx context.Context, op, rawURL, bucket string) ([]byte, error) {
	var (
		notBefore time.Time // set by a 429 of this call
		last      *Error
	)
	for attempt := 1; ; attempt++ {
		wait := max(c.limitWait(bucket), time.Until(notBefore))
		if wait > 0 {
			if !fits(ctx, wait) {
				if last != nil {
					return nil, last
				}
				return nil, &Error{Op: op, RetryAfter: wait, Retryable: true, Err: ErrRateLimited}
			}
			limited := last == nil || last.Status == http.StatusTooManyRequests
			if err := c.pause(ctx, op, wait, limited); err != nil {
				return nil, err
			}
		}

		body, err := c.once(ctx, op, rawURL, bucket)
		if err == nil {
			return body, nil
		}
		last = err
		if attempt >= maxAttempts {
			return nil, err
		}

		switch {
		case err.Status == http.StatusTooManyRequests:
			notBefore = time.Now().Add(err.RetryAfter)
		case err.Status >= 500 && attempt <= serverRetries:
			notBefore = time.Now().Add(serverBackoff * time.Duration(attempt))
		default:
			return nil, err
		}
	}
}

// once sends one request. discordgo may block on its bucket lock or sleep in it without
// looking at the context, so it runs in its own goroutine and the caller leaves when ctx ends;
// the request itself carries ctx and ends soon after.
func (c *Client) once(ctx context.Context, op, rawURL, bucket string) ([]byte, *Error) {
	if err := ctx.Err(); err != nil {
		return nil, contextError(op, ctx)
	}

	ex := &exchange{}
	rctx := context.WithValue(ctx, exchangeKey{}, ex)

	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("discordgo panicked: %v", p)}
			}
		}()
		body, err := c.s.RequestWithBucketID(http.MethodGet, rawURL, nil, bucket,
			discordgo.WithContext(rctx),
			discordgo.WithRetryOnRatelimit(false),
			discordgo.WithRestRetries(0),
		)
		done <- result{body: body, err: err}
	}()

	select {
	case <-ctx.Done():
		return nil, contextError(op, ctx)
	case r := <-done:
		if r.err == nil {
			return r.body, nil
		}
		return nil, c.classify(ctx, op, ex, r.err)
	}
}

// classify turns what discordgo returned, and what the transport saw, into an *Error.
func (c *Client) classify(ctx context.Context, op string, ex *exchange, err error) *Error {
	e := &Error{Op: op, Status: ex.status}
	if rest, ok := errors.AsType[*discordgo.RESTError](err); ok && rest.Response != nil {
		e.Status = rest.Response.StatusCode
		if rest.Message != nil {
			e.Code = rest.Message.Code
			e.Message = rest.Message.Message
		}
	}

	switch {
	case e.Status == http.StatusTooManyRequests:
		c.rateLimit(ctx, op, e, ex)
	case e.Status == http.StatusNotFound &&
		(e.Code == codeUnknownMember || e.Code == codeUnknownUser):
		e.Err = ErrNotMember
	case e.Status >= 400:
		e.Retryable = retryableStatus(e.Status)
	default:
		// No answer, or an answer discordgo could not read: a transport problem or a
		// garbled rate-limit header.
		e.Err = err
		e.Retryable = e.Status != 0 || transient(err)
	}
	return e
}

// rateLimitBody is Discord's 429 body.
type rateLimitBody struct {
	Message    string  `json:"message"`
	RetryAfter float64 `json:"retry_after"`
	Global     bool    `json:"global"`
	Code       int     `json:"code"`
}

// rateLimit fills e from a 429 and, for a global one, holds every later call of this client.
// discordgo only honours a global 429 that also sends X-RateLimit-Reset-After, which Discord's
// documented global 429 does not.
func (c *Client) rateLimit(ctx context.Context, op string, e *Error, ex *exchange) {
	c.rateLimited.Add(1)
	e.Err = ErrRateLimited
	e.Retryable = true

	var b rateLimitBody
	_ = json.Unmarshal(ex.body, &b) // a garbled body falls back to the headers below
	e.Message, e.Code = b.Message, b.Code
	e.RetryAfter = seconds(b.RetryAfter)
	if e.RetryAfter <= 0 {
		e.RetryAfter = headerSeconds(ex.header, "Retry-After")
	}
	if e.RetryAfter <= 0 {
		e.RetryAfter = headerSeconds(ex.header, "X-RateLimit-Reset-After")
	}
	if e.RetryAfter <= 0 {
		e.RetryAfter = time.Second
	}

	scope := ex.header.Get("X-RateLimit-Scope")
	global := b.Global || ex.header.Get("X-RateLimit-Global") == "true" || scope == "global"
	if !global {
		c.log.DebugContext(ctx, "discord rate limit",
			"op", op, "scope", scope, "retry_after", e.RetryAfter)
		return
	}

	until := time.Now().Add(e.RetryAfter).UnixNano()
	for {
		prev := c.globalUntil.Load()
		if prev >= until || c.globalUntil.CompareAndSwap(prev, until) {
			break
		}
	}
	c.log.WarnContext(ctx, "discord global rate limit, holding all calls",
		"op", op, "retry_after", e.RetryAfter)
}

// limitWait is how long a call on bucket must wait for rate limits already known: a global
// 429 seen by this client, or discordgo's bucket state. A bucket busy with a request in flight
// is not waited for here; once copes with that.
func (c *Client) limitWait(bucket string) time.Duration {
	wait := max(time.Until(time.Unix(0, c.globalUntil.Load())), 0)

	rl := c.s.Ratelimiter
	b := rl.GetBucket(bucket)
	if b.TryLock() {
		wait = max(wait, rl.GetWaitTime(b, 1))
		b.Unlock()
	}
	return wait
}

// pause waits d unless ctx ends first; limited says the wait is for a rate limit, not a
// back-off after a 5xx, and goes into Stats.
func (c *Client) pause(ctx context.Context, op string, d time.Duration, limited bool) error {
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	if limited {
		defer func() { c.rateLimitWait.Add(int64(time.Since(start))) }()
	}

	select {
	case <-ctx.Done():
		return contextError(op, ctx)
	case <-t.C:
		return nil
	}
}

// fits reports whether waiting d still leaves time before ctx's deadline, and d is no longer
// than a call may wait at all.
func fits(ctx context.Context, d time.Duration) bool {
	if d > maxWait {
		return false
	}
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) > d
}

func contextError(op string, ctx context.Context) *Error {
	err := context.Cause(ctx)
	return &Error{Op: op, Err: err, Retryable: transient(err)}
}

// seconds turns Discord's float seconds into a duration. A wait too long to represent is
// capped at a day rather than dropped: dropping it made a huge retry_after look like none at
// all and the call was retried after a second.
func seconds(f float64) time.Duration {
	switch {
	case f <= 0 || math.IsNaN(f):
		return 0
	case math.IsInf(f, 1) || f > 86400:
		return 24 * time.Hour
	}
	return time.Duration(f * float64(time.Second))
}

func headerSeconds(h http.Header, key string) time.Duration {
	f, err := strconv.ParseFloat(h.Get(key), 64)
	if err != nil {
		return 0
	}
	return seconds(f)
}

// exchange is what the transport saw of one request's answer. discordgo hides the headers and
// the body of a 429 behind its own error types, so the transport keeps them here.
type exchange struct {
	status int
	header http.Header
	body   []byte // only for 429
}

type exchangeKey struct{}

// observer counts requests and records answers for the exchange in the request's context.
type observer struct {
	next  http.RoundTripper
	calls *atomic.Int64
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	o.calls.Add(1)
	resp, err := o.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}

	ex, ok := req.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return resp, nil
	}
	ex.status = resp.StatusCode
	ex.header = resp.Header
	if resp.StatusCode == http.StatusTooManyRequests {
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		ex.body = body
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, nil
}
