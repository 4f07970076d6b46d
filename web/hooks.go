package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/discord-authentik-bridge/bridge/guild"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// lateSyncTimeout bounds a sync that outlived the hook's deadline and runs on in the
// background.
const lateSyncTimeout = 2 * time.Minute

// gateTimeout bounds the gate's question to Discord. The shipped blueprint waits 5 s for the
// answer; a gate that waits out a long rate limit would be refused by Authentik anyway, so it
// answers "unavailable" in time instead.
const gateTimeout = 4 * time.Second

// gateRequest is the body of POST /v1/authentik/gate. discord_id is a string: Discord IDs do
// not fit a float64, and a number may already have been rounded by whoever sent it.
type gateRequest struct {
	DiscordID string `json:"discord_id"`
}

type gateResponse struct {
	Allowed bool     `json:"allowed"`
	Reason  string   `json:"reason"`
	Message string   `json:"message"`
	Groups  []string `json:"groups"`
}

// gate tells Authentik whether a Discord user may enroll or log in.
func (s *Server) gate(c echo.Context) error {
	var req gateRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	if err := checkDiscordID(req.DiscordID); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), gateTimeout)
	defer cancel()
	ms, err := guild.Lookup(ctx, s.o.Discord, s.o.GuildID, req.DiscordID)
	if err != nil {
		s.metrics.gate.WithLabelValues("error").Inc()
		s.log.Warn("gate could not ask discord", "discord_id", req.DiscordID, "err", err)
		return c.JSON(http.StatusServiceUnavailable, gateResponse{
			Reason:  "discord_unavailable",
			Message: "Discord could not be asked whether you are a member. Please try again in a minute.",
			Groups:  []string{},
		})
	}

	resp := gateResponse{Reason: string(ms.State), Groups: []string{}}
	switch {
	case ms.Admitted(s.o.AllowPending):
		resp.Allowed = true
		resp.Message = "Welcome."
		if m, err := s.o.Reconciler.Mapping(ctx); err == nil {
			for uuid := range s.o.Reconciler.DesiredGroups(m, ms) {
				if g, ok := m.Group(uuid); ok {
					resp.Groups = append(resp.Groups, g.Name)
				}
			}
			sort.Strings(resp.Groups)
		}
	case ms.State == guild.StatePending:
		resp.Message = "Please finish the Discord server's membership screening, then try again."
	default:
		resp.Reason = "not_member"
		resp.Message = "This login is only for members of our Discord server. Join it, then try again."
	}
	s.metrics.gate.WithLabelValues(resp.Reason).Inc()
	return c.JSON(http.StatusOK, resp)
}

// syncRequest is the body of POST /v1/authentik/sync.
type syncRequest struct {
	DiscordID string `json:"discord_id"`
	UserPK    *int32 `json:"user_pk"`
}

type syncResponse struct {
	Status  string   `json:"status"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Avatar  string   `json:"avatar"`
	Message string   `json:"message,omitempty"`
}

// sync brings one user in line now, so the token Authentik is about to issue carries the
// right groups. Past the deadline it answers "queued" and lets the sync finish on its own.
func (s *Server) sync(c echo.Context) error {
	var req syncRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	if err := checkDiscordID(req.DiscordID); err != nil {
		return err
	}
	if req.UserPK == nil || *req.UserPK <= 0 {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
			Message: "user_pk must be a positive integer"}
	}
	target := reconcile.Target{DiscordID: req.DiscordID, UserPKs: []int32{*req.UserPK}}

	type result struct {
		out *reconcile.Outcome
		err error
	}
	select {
	case s.lateSlots <- struct{}{}:
	default:
		return &apiError{Status: http.StatusServiceUnavailable, Code: "busy",
			Message: "too many syncs are running; the next full pass covers this user"}
	}
	done := make(chan result, 1)
	s.late.Add(1)
	go func() {
		defer func() { <-s.lateSlots }()
		defer s.late.Done()
		ctx, cancel := context.WithTimeout(s.lateCtx, lateSyncTimeout)
		defer cancel()
		out, err := s.o.Reconciler.Sync(ctx, target, "hook", false)
		if err != nil {
			s.log.Warn("sync from login hook failed", "discord_id", target.DiscordID,
				"user_pk", *req.UserPK, "err", err)
			if s.o.Retry != nil && ctx.Err() == nil && reconcile.Transient(err) {
				s.o.Retry(target.DiscordID, target.UserPKs)
			}
		}
		done <- result{out, err}
	}()

	timer := time.NewTimer(s.o.SyncDeadline)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil && !reconcile.Transient(r.err) {
			s.metrics.hookSync.WithLabelValues("refused").Inc()
			return c.JSON(http.StatusConflict, syncResponse{
				Status: "refused", Added: []string{}, Removed: []string{},
				Message: "sync refused; it will not be retried: " + r.err.Error(),
			})
		}
		if r.err != nil {
			s.metrics.hookSync.WithLabelValues("error").Inc()
			return c.JSON(http.StatusServiceUnavailable, syncResponse{
				Status: "error", Added: []string{}, Removed: []string{},
				Message: "sync failed; it will be retried: " + r.err.Error(),
			})
		}
		s.metrics.hookSync.WithLabelValues(string(r.out.Result)).Inc()
		resp := syncResponse{Status: string(r.out.Result), Added: r.out.Added,
			Removed: r.out.Removed, Avatar: r.out.Avatar}
		if resp.Added == nil {
			resp.Added = []string{}
		}
		if resp.Removed == nil {
			resp.Removed = []string{}
		}
		return c.JSON(http.StatusOK, resp)
	case <-timer.C:
		s.metrics.hookSync.WithLabelValues("queued").Inc()
		return c.JSON(http.StatusAccepted, syncResponse{
			Status: "queued", Added: []string{}, Removed: []string{},
			Message: "the sync is taking longer than the deadline and finishes in the background",
		})
	}
}

// decode reads a JSON object into v and turns every way of getting it wrong into a 400 that
// says what was wrong.
func decode(c echo.Context, v any) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err // the body limit's error, mapped to 413 by the error handler
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			what := jsonKind(te.Type)
			if what == "integer" && te.Value == "number" {
				what = "integer that fits 32 bits"
			}
			return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
				Message: fmt.Sprintf("field %s must be a JSON %s, not %s", te.Field,
					what, te.Value)}
		}
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
			Message: "body is not a JSON object: " + err.Error()}
	}
	if dec.More() {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request",
			Message: "body holds more than one JSON value"}
	}
	return nil
}

// jsonKind names the JSON type a Go field accepts, for error messages.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Bool:
		return "boolean"
	default:
		return "object"
	}
}

// checkDiscordID accepts what Discord can issue: a decimal uint64 without leading zeros.
func checkDiscordID(id string) error {
	bad := func(msg string) error {
		return &apiError{Status: http.StatusBadRequest, Code: "bad_request", Message: msg}
	}
	if id == "" {
		return bad("discord_id is required (a string of digits)")
	}
	for _, r := range id {
		if r < '0' || r > '9' {
			return bad("discord_id must hold only digits")
		}
	}
	if n, err := strconv.ParseUint(id, 10, 64); err != nil || n == 0 || id[0] == '0' {
		return bad("discord_id is not a Discord ID (a non-zero 64-bit number without leading zeros)")
	}
	return nil
}
