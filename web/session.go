package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Cookie names. The session cookie holds only a random ID and its MAC; everything else stays
// in memory, so no token or group list ever travels in a cookie.
const (
	sessionCookie = "bridge_session"
	loginCookie   = "bridge_login"
)

// Bounds on what an unauthenticated visitor can make the bridge remember.
const (
	maxSessions   = 10000
	maxLogins     = 1000
	loginLifetime = 10 * time.Minute
	// idleLifetime ends a session nobody used for this long, well before its absolute end.
	idleLifetime = 2 * time.Hour
)

// session is one signed-in admin (or, with login off, one browser). Only the flashes change
// after creation; they are guarded by the store's mutex.
type session struct {
	id      string
	csrf    string
	user    string
	dev     bool
	created time.Time
	seen    time.Time
	flashes []flash
}

// flash is a one-time message shown on the next page, after a POST redirected.
type flash struct {
	Kind string // ok, error or info
	Text string
}

// pendingLogin is what the callback needs to finish a login the bridge started.
type pendingLogin struct {
	state    string
	nonce    string
	verifier string // PKCE code verifier
	next     string // where to go after the login
	created  time.Time
}

// sessions keeps sessions and pending logins in memory: a restart signs everybody out, which
// for an admin page is a fair price for keeping no session secret on disk.
type sessions struct {
	key    []byte // MAC key for cookie values, random per process
	ttl    time.Duration
	secure bool
	now    func() time.Time

	mu     sync.Mutex
	byID   map[string]*session
	logins map[string]*pendingLogin
}

func newSessions(ttl time.Duration, secure bool) *sessions {
	return &sessions{key: randomBytes(32), ttl: ttl, secure: secure, now: time.Now,
		byID: map[string]*session{}, logins: map[string]*pendingLogin{}}
}

// randomBytes reads n bytes from the system's generator, which never fails on supported
// platforms (crypto/rand panics itself if it cannot read).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomToken() string { return base64.RawURLEncoding.EncodeToString(randomBytes(32)) }

// sign binds a value to this process and to its purpose, so a login cookie cannot be replayed
// as a session cookie or the other way round.
func (ss *sessions) sign(purpose, v string) string {
	mac := hmac.New(sha256.New, ss.key)
	mac.Write([]byte(purpose + "\x00" + v))
	return v + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// verify returns the value of a signed cookie, or false.
func (ss *sessions) verify(purpose, signed string) (string, bool) {
	v, _, ok := strings.Cut(signed, ".")
	if !ok || v == "" {
		return "", false
	}
	want := ss.sign(purpose, v)
	return v, subtle.ConstantTimeCompare([]byte(want), []byte(signed)) == 1
}

func (ss *sessions) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		Secure: ss.secure, SameSite: http.SameSiteLaxMode}
}

// get returns the request's live session, or nil.
func (ss *sessions) get(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	id, ok := ss.verify(sessionCookie, ck.Value)
	if !ok {
		return nil
	}
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[id]
	if s == nil {
		return nil
	}
	if now.Sub(s.created) > ss.ttl || now.Sub(s.seen) > idleLifetime {
		delete(ss.byID, id)
		return nil
	}
	s.seen = now
	return s
}

// create starts a session for user and sets its cookie. A new ID on every login keeps an ID
// planted before the login (session fixation) useless.
func (ss *sessions) create(w http.ResponseWriter, user string, dev bool) *session {
	now := ss.now()
	s := &session{id: randomToken(), csrf: randomToken(), user: user, dev: dev, created: now,
		seen: now}
	ss.mu.Lock()
	ss.sweep(now)
	if len(ss.byID) >= maxSessions {
		ss.evictOldest()
	}
	ss.byID[s.id] = s
	ss.mu.Unlock()
	http.SetCookie(w, ss.cookie(sessionCookie, ss.sign(sessionCookie, s.id),
		int(ss.ttl/time.Second)))
	return s
}

// destroy ends the request's session, if any, and clears its cookie.
func (ss *sessions) destroy(w http.ResponseWriter, r *http.Request) {
	if s := ss.get(r); s != nil {
		ss.mu.Lock()
		delete(ss.byID, s.id)
		ss.mu.Unlock()
	}
	http.SetCookie(w, ss.cookie(sessionCookie, "", -1))
}

// sweep drops expired sessions and logins. Caller holds ss.mu.
func (ss *sessions) sweep(now time.Time) {
	for id, s := range ss.byID {
		if now.Sub(s.created) > ss.ttl || now.Sub(s.seen) > idleLifetime {
			delete(ss.byID, id)
		}
	}
	for st, l := range ss.logins {
		if now.Sub(l.created) > loginLifetime {
			delete(ss.logins, st)
		}
	}
}

// evictOldest drops the least recently used session. Caller holds ss.mu.
func (ss *sessions) evictOldest() {
	var oldest *session
	for _, s := range ss.byID {
		if oldest == nil || s.seen.Before(oldest.seen) {
			oldest = s
		}
	}
	if oldest != nil {
		delete(ss.byID, oldest.id)
	}
}

func (ss *sessions) addFlash(s *session, kind, text string) {
	ss.mu.Lock()
	s.flashes = append(s.flashes, flash{Kind: kind, Text: text})
	ss.mu.Unlock()
}

func (ss *sessions) popFlashes(s *session) []flash {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := s.flashes
	s.flashes = nil
	return f
}

// startLogin remembers a new login attempt and ties it to the browser with a cookie, so that
// a callback carrying someone else's state (login CSRF) is refused.
func (ss *sessions) startLogin(w http.ResponseWriter, next, verifier string) *pendingLogin {
	now := ss.now()
	l := &pendingLogin{state: randomToken(), nonce: randomToken(), verifier: verifier,
		next: next, created: now}
	ss.mu.Lock()
	ss.sweep(now)
	if len(ss.logins) >= maxLogins {
		var oldest *pendingLogin
		for _, p := range ss.logins {
			if oldest == nil || p.created.Before(oldest.created) {
				oldest = p
			}
		}
		delete(ss.logins, oldest.state)
	}
	ss.logins[l.state] = l
	ss.mu.Unlock()
	http.SetCookie(w, ss.cookie(loginCookie, ss.sign(loginCookie, l.state),
		int(loginLifetime/time.Second)))
	return l
}

// errLoginState is a callback that does not belong to a login this browser started here.
var errLoginState = errors.New("login state does not match")

// finishLogin takes the pending login named by state, which must also be the one in the
// browser's login cookie. A state works once.
func (ss *sessions) finishLogin(w http.ResponseWriter, r *http.Request, state string) (*pendingLogin, error) {
	http.SetCookie(w, ss.cookie(loginCookie, "", -1))
	ck, err := r.Cookie(loginCookie)
	if err != nil {
		return nil, errLoginState
	}
	mine, ok := ss.verify(loginCookie, ck.Value)
	if !ok || subtle.ConstantTimeCompare([]byte(mine), []byte(state)) != 1 {
		return nil, errLoginState
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	l := ss.logins[state]
	delete(ss.logins, state)
	if l == nil || ss.now().Sub(l.created) > loginLifetime {
		return nil, errLoginState
	}
	return l, nil
}

// validCSRF reports whether the request carries the session's token, as the csrf_token form
// field or the X-CSRF-Token header.
func validCSRF(s *session, r *http.Request) bool {
	token := r.PostFormValue("csrf_token")
	if token == "" {
		token = r.Header.Get("X-CSRF-Token")
	}
	return s != nil && token != "" &&
		subtle.ConstantTimeCompare([]byte(token), []byte(s.csrf)) == 1
}
