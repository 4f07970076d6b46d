package authentikstub

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// installID stands in for the per-installation ID from which Authentik derives user uids.
const installID = "3f6e2c1a-8b4d-4e7f-9a05-6c1d2b3e4f50"

// First primary keys handed out, so that IDs look like those of an installation that already has
// its built-in objects (akadmin, the outpost service accounts, the default groups).
const (
	firstUserPK  = 7
	firstGroupPK = 3
	firstConnPK  = 11
	firstGrantPK = 21
)

// Seed data types. Attributes are raw JSON so that numbers keep their exact literal.

// User is a user to seed with AddUser. IsActive is false unless set. An empty Type means
// "external", the type of users enrolled through a source such as Discord. Nil Attributes
// means {}.
type User struct {
	Username   string
	Name       string
	Email      string
	IsActive   bool
	Attributes json.RawMessage
	Type       string
}

// Group is a group to seed with AddGroup. Nil Attributes means {}.
type Group struct {
	Name        string
	IsSuperuser bool
	Attributes  json.RawMessage
	// Parents are the uuids of the group's parents; members inherit their superuser flag.
	Parents []string
}

type user struct {
	pk        int32
	uuid      string
	username  string
	name      string
	email     string
	isActive  bool
	lastLogin *time.Time
	joined    time.Time
	pwChanged time.Time
	updated   time.Time
	attrs     json.RawMessage // compact JSON object, served verbatim
	path      string
	typ       string

	// doc is attrs decoded, for filtered lists, and docOf the attrs it was decoded from:
	// attrs are replaced, never changed in place, so a different slice means a new value.
	// val is the value at the path of the filter key valKey, looked up in doc.
	doc    any
	docOf  json.RawMessage
	valKey string
	val    any
	valOK  bool
}

// matches reports whether the user's attributes pass an attributes filter. It decodes them
// once per value rather than once per list: a full pass of the bridge sends a filtered list
// for every few users it changes, and each list looks at every user. Caller holds s.mu.
func (u *user) matches(f attrFilter) bool {
	if f == nil {
		return true
	}
	if len(u.attrs) == 0 {
		return false
	}
	if len(u.docOf) != len(u.attrs) || &u.docOf[0] != &u.attrs[0] {
		doc, ok := decodeAttrs(u.attrs)
		if !ok {
			return false
		}
		u.doc, u.docOf, u.valKey = doc, u.attrs, ""
	}
	if len(f) > 1 {
		return f.matches(u.doc)
	}
	// One key, as the bridge asks: the value at its path is kept for the next list.
	if u.valKey != f[0].key {
		u.val, u.valOK = f[0].lookup(u.doc)
		u.valKey = f[0].key
	}
	return u.valOK && f[0].holds(u.val)
}

type group struct {
	uuid      string
	numPK     int32
	name      string
	superuser bool
	attrs     json.RawMessage
	parents   []string
	members   map[int32]struct{}
}

type source struct {
	uuid       string
	slug       string
	name       string
	authFlow   string
	enrollFlow string
}

type connection struct {
	pk         int32
	userPK     int32
	source     *source
	identifier string
	created    time.Time
}

type session struct {
	uuid     string
	userPK   int32
	lastUsed time.Time
	expires  time.Time
}

// grant is an OAuth2 access or refresh token issued to a user by the one seeded provider.
type grant struct {
	pk      int32
	userPK  int32
	expires time.Time
}

var userTypes = []string{"internal", "external", "service_account", "internal_service_account"}

// normalizeAttrs compacts an attributes value (whitespace only: key order and number literals
// stay as written) and reports whether it is a JSON object.
func normalizeAttrs(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage("{}"), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("attributes are not valid JSON: %w", err)
	}
	if buf.Bytes()[0] != '{' {
		return nil, fmt.Errorf("attributes must be a JSON object, got %.20s", buf.String())
	}
	return buf.Bytes(), nil
}

func userUID(pk int32) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s-%d", installID, pk))
	return hex.EncodeToString(sum[:])
}

// stamp formats a time the way Django REST framework does: ISO 8601 in UTC with "Z".
func stamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

func stampPtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := stamp(*t)
	return &s
}

// avatarOf mimics the avatar setting "attributes.avatar,initials": a URL stored in the
// attributes wins, otherwise an SVG of the initials.
func avatarOf(u *user) string {
	var attrs struct {
		Avatar any `json:"avatar"`
	}
	if json.Unmarshal(u.attrs, &attrs) == nil {
		if url, ok := attrs.Avatar.(string); ok &&
			(strings.HasPrefix(url, "https://") || strings.HasPrefix(url, "http://")) {
			return url
		}
	}

	initials := ""
	for _, word := range strings.Fields(cmp.Or(u.name, u.username)) {
		initials += strings.ToUpper(string([]rune(word)[:1]))
		if len([]rune(initials)) == 2 {
			break
		}
	}
	svg := `<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">` +
		`<rect width="100" height="100" fill="#3b82f6"/><text x="50" y="50" ` +
		`text-anchor="middle" dominant-baseline="central" fill="#fff" font-size="40">` +
		initials + `</text></svg>`
	return "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(svg))
}

// groupsOf returns the groups user pk belongs to, ordered by name. Caller holds s.mu.
func (s *Server) groupsOf(pk int32) []*group {
	var out []*group
	for _, g := range s.groups {
		if _, ok := g.members[pk]; ok {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b *group) int { return strings.Compare(a.name, b.name) })
	return out
}

// isSuperuser derives the flag as Authentik does: membership of any superuser group.
// isSuperuser reports whether a user is superuser through any of its groups or their
// ancestors, as Authentik computes it. Caller holds s.mu.
func (s *Server) isSuperuser(pk int32) bool {
	for _, g := range s.groups {
		if _, ok := g.members[pk]; ok && s.inheritsSuperuser(g, map[string]bool{}) {
			return true
		}
	}
	return false
}

func (s *Server) inheritsSuperuser(g *group, seen map[string]bool) bool {
	if g.superuser {
		return true
	}
	seen[g.uuid] = true
	for _, p := range g.parents {
		if pg, ok := s.groups[p]; ok && !seen[p] && s.inheritsSuperuser(pg, seen) {
			return true
		}
	}
	return false
}

// Views: the JSON shapes Authentik's serializers produce. Nil slices marshal as null, which the
// schemas allow exactly where Authentik leaves an optional part out.

type roleView struct {
	PK   string `json:"pk"`
	Name string `json:"name"`
}

type partialGroupView struct {
	PK          string          `json:"pk"`
	NumPK       int32           `json:"num_pk"`
	Name        string          `json:"name"`
	IsSuperuser bool            `json:"is_superuser"`
	Attributes  json.RawMessage `json:"attributes"`
}

type userView struct {
	PK                 int32              `json:"pk"`
	Username           string             `json:"username"`
	Name               string             `json:"name"`
	IsActive           bool               `json:"is_active"`
	LastLogin          *string            `json:"last_login"`
	DateJoined         string             `json:"date_joined"`
	IsSuperuser        bool               `json:"is_superuser"`
	Groups             []string           `json:"groups"`
	GroupsObj          []partialGroupView `json:"groups_obj"`
	Roles              []string           `json:"roles"`
	RolesObj           []roleView         `json:"roles_obj"`
	Email              string             `json:"email"`
	Avatar             string             `json:"avatar"`
	Attributes         json.RawMessage    `json:"attributes"`
	UID                string             `json:"uid"`
	Path               string             `json:"path"`
	Type               string             `json:"type"`
	UUID               string             `json:"uuid"`
	PasswordChangeDate string             `json:"password_change_date"`
	LastUpdated        string             `json:"last_updated"`
}

// userView renders a user. Caller holds s.mu.
func (s *Server) userView(u *user, withGroups, withRoles bool) userView {
	v := userView{
		PK:                 u.pk,
		Username:           u.username,
		Name:               u.name,
		IsActive:           u.isActive,
		LastLogin:          stampPtr(u.lastLogin),
		DateJoined:         stamp(u.joined),
		IsSuperuser:        s.isSuperuser(u.pk),
		Groups:             []string{},
		Roles:              []string{},
		Email:              u.email,
		Avatar:             avatarOf(u),
		Attributes:         u.attrs,
		UID:                userUID(u.pk),
		Path:               u.path,
		Type:               u.typ,
		UUID:               u.uuid,
		PasswordChangeDate: stamp(u.pwChanged),
		LastUpdated:        stamp(u.updated),
	}
	if withGroups {
		v.GroupsObj = []partialGroupView{}
	}
	if withRoles {
		v.RolesObj = []roleView{}
	}
	for _, g := range s.groupsOf(u.pk) {
		v.Groups = append(v.Groups, g.uuid)
		if withGroups {
			v.GroupsObj = append(v.GroupsObj, partialGroupView{
				PK: g.uuid, NumPK: g.numPK, Name: g.name, IsSuperuser: g.superuser,
				Attributes: g.attrs,
			})
		}
	}
	return v
}

type partialUserView struct {
	PK         int32           `json:"pk"`
	Username   string          `json:"username"`
	Name       string          `json:"name"`
	IsActive   bool            `json:"is_active"`
	LastLogin  *string         `json:"last_login"`
	Email      string          `json:"email"`
	Attributes json.RawMessage `json:"attributes"`
	UID        string          `json:"uid"`
}

type relatedGroupView struct {
	PK          string          `json:"pk"`
	GroupUUID   string          `json:"group_uuid"`
	Name        string          `json:"name"`
	IsSuperuser bool            `json:"is_superuser"`
	Attributes  json.RawMessage `json:"attributes"`
}

type groupView struct {
	PK                string             `json:"pk"`
	NumPK             int32              `json:"num_pk"`
	Name              string             `json:"name"`
	IsSuperuser       bool               `json:"is_superuser"`
	Parents           []string           `json:"parents"`
	ParentsObj        []relatedGroupView `json:"parents_obj"`
	Users             []int32            `json:"users"`
	UsersObj          []partialUserView  `json:"users_obj"`
	Attributes        json.RawMessage    `json:"attributes"`
	Roles             []string           `json:"roles"`
	RolesObj          []roleView         `json:"roles_obj"`
	InheritedRolesObj []roleView         `json:"inherited_roles_obj"`
	Children          []string           `json:"children"`
	ChildrenObj       []relatedGroupView `json:"children_obj"`
}

// groupOptions are the include_* query switches of the group endpoints.
type groupOptions struct {
	users, parents, children, inheritedRoles bool
}

// groupView renders a group. The stub has parents but no children lists and no roles, so those
// lists are empty, or null where Authentik leaves them out unless asked. Caller holds s.mu.
func (s *Server) groupView(g *group, opt groupOptions) groupView {
	v := groupView{
		PK:          g.uuid,
		NumPK:       g.numPK,
		Name:        g.name,
		IsSuperuser: g.superuser,
		Parents:     append([]string{}, g.parents...),
		Users:       memberPKs(g),
		Attributes:  g.attrs,
		Roles:       []string{},
		RolesObj:    []roleView{},
		Children:    []string{},
	}
	if opt.parents {
		v.ParentsObj = []relatedGroupView{}
	}
	if opt.children {
		v.ChildrenObj = []relatedGroupView{}
	}
	if opt.inheritedRoles {
		v.InheritedRolesObj = []roleView{}
	}
	if opt.users {
		v.UsersObj = []partialUserView{}
		for _, pk := range v.Users {
			u := s.users[pk]
			v.UsersObj = append(v.UsersObj, partialUserView{
				PK: u.pk, Username: u.username, Name: u.name, IsActive: u.isActive,
				LastLogin: stampPtr(u.lastLogin), Email: u.email, Attributes: u.attrs,
				UID: userUID(u.pk),
			})
		}
	}
	return v
}

func memberPKs(g *group) []int32 {
	pks := make([]int32, 0, len(g.members))
	for pk := range g.members {
		pks = append(pks, pk)
	}
	slices.Sort(pks)
	return pks
}

type userSelfView struct {
	PK                int32             `json:"pk"`
	Username          string            `json:"username"`
	Name              string            `json:"name"`
	IsActive          bool              `json:"is_active"`
	IsSuperuser       bool              `json:"is_superuser"`
	IsCurrent         bool              `json:"is_current"`
	Groups            []roleView        `json:"groups"`
	Roles             []roleView        `json:"roles"`
	Email             string            `json:"email"`
	Avatar            string            `json:"avatar"`
	UID               string            `json:"uid"`
	Settings          map[string]string `json:"settings"`
	Type              string            `json:"type"`
	SystemPermissions []string          `json:"system_permissions"`
}

// sessionUserView is the answer of users/me/. 2026.8 added "users" (every account of the
// browser session) and "is_current"; older releases ignore both.
type sessionUserView struct {
	User  userSelfView   `json:"user"`
	Users []userSelfView `json:"users"`
}

// userSelfView renders the token owner as users/me/ does. Caller holds s.mu.
func (s *Server) userSelfView(u *user) userSelfView {
	v := userSelfView{
		PK:                u.pk,
		Username:          u.username,
		Name:              u.name,
		IsActive:          u.isActive,
		IsSuperuser:       s.isSuperuser(u.pk),
		IsCurrent:         true,
		Groups:            []roleView{},
		Roles:             []roleView{},
		Email:             u.email,
		Avatar:            avatarOf(u),
		UID:               userUID(u.pk),
		Settings:          map[string]string{},
		Type:              u.typ,
		SystemPermissions: []string{},
	}
	for _, g := range s.groupsOf(u.pk) {
		v.Groups = append(v.Groups, roleView{PK: g.uuid, Name: g.name})
	}
	return v
}

// sourceView renders the base Source serializer; oauthSourceView adds the OAuth fields.
func sourceView(src *source) map[string]any {
	return map[string]any{
		"pk":                      src.uuid,
		"name":                    src.name,
		"slug":                    src.slug,
		"enabled":                 true,
		"promoted":                false,
		"authentication_flow":     src.authFlow,
		"enrollment_flow":         src.enrollFlow,
		"user_property_mappings":  []string{},
		"group_property_mappings": []string{},
		"component":               "ak-source-oauth-form",
		"verbose_name":            "OAuth Source",
		"verbose_name_plural":     "OAuth Sources",
		"meta_model_name":         "authentik_sources_oauth.oauthsource",
		"policy_engine_mode":      "any",
		"user_matching_mode":      "identifier",
		"managed":                 nil,
		"user_path_template":      "goauthentik.io/sources/%(slug)s",
		"icon":                    "",
		"icon_url":                nil,
		"icon_themed_urls":        nil,
	}
}

func oauthSourceView(src *source) map[string]any {
	v := sourceView(src)
	v["group_matching_mode"] = "identifier"
	v["provider_type"] = "discord"
	v["request_token_url"] = nil
	v["authorization_url"] = nil
	v["access_token_url"] = nil
	v["profile_url"] = nil
	v["pkce"] = "none"
	v["consumer_key"] = "1187654321098765432"
	v["callback_url"] = "/source/oauth/callback/" + src.slug + "/"
	v["additional_scopes"] = "guilds guilds.members.read"
	v["type"] = map[string]any{
		"name":                "discord",
		"verbose_name":        "Discord",
		"urls_customizable":   false,
		"request_token_url":   nil,
		"authorization_url":   "https://discord.com/api/oauth2/authorize",
		"access_token_url":    "https://discord.com/api/oauth2/token",
		"profile_url":         "https://discord.com/api/users/@me",
		"oidc_well_known_url": nil,
		"oidc_jwks_url":       nil,
	}
	v["oidc_well_known_url"] = ""
	v["oidc_jwks_url"] = ""
	v["oidc_jwks"] = map[string]any{}
	v["authorization_code_auth_method"] = "basic_auth"
	return v
}

func (s *Server) connectionView(c *connection) map[string]any {
	return map[string]any{
		"pk":           c.pk,
		"user":         c.userPK,
		"source":       c.source.uuid,
		"source_obj":   sourceView(c.source),
		"identifier":   c.identifier,
		"created":      stamp(c.created),
		"last_updated": stamp(c.created),
	}
}

func sessionView(se *session) map[string]any {
	const agent = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
	return map[string]any{
		"uuid":    se.uuid,
		"current": false,
		"user_agent": map[string]any{
			"device": map[string]any{"brand": "Other", "family": "Other", "model": "Other"},
			"os": map[string]any{
				"family": "Linux", "major": "", "minor": "", "patch": "", "patch_minor": "",
			},
			"user_agent": map[string]any{
				"family": "Firefox", "major": "140", "minor": "0", "patch": "",
			},
			"string": agent,
		},
		"geo_ip":          nil,
		"asn":             nil,
		"user":            se.userPK,
		"last_ip":         "192.0.2.44",
		"last_user_agent": agent,
		"last_used":       stamp(se.lastUsed),
		"expires":         stamp(se.expires),
	}
}

// providerView is the one OAuth2 provider every seeded token belongs to. It carries the
// OAuth2Provider fields because 2026.2.2 types TokenModel.provider as OAuth2Provider while 2026.8
// narrowed it to the base Provider.
func providerView() map[string]any {
	return map[string]any{
		"pk":                                    1,
		"name":                                  "Community app",
		"authentication_flow":                   nil,
		"authorization_flow":                    "6a1f0c5e-2b7d-4f3a-9c8e-1d2b3a4c5e6f",
		"invalidation_flow":                     "7b2e1d6f-3c8e-4a4b-8d9f-2e3c4b5d6f70",
		"property_mappings":                     []string{},
		"component":                             "ak-provider-oauth2-form",
		"assigned_application_slug":             "community-app",
		"assigned_application_name":             "Community app",
		"assigned_backchannel_application_slug": nil,
		"assigned_backchannel_application_name": nil,
		"verbose_name":                          "OAuth2/OpenID Provider",
		"verbose_name_plural":                   "OAuth2/OpenID Providers",
		"meta_model_name":                       "authentik_providers_oauth2.oauth2provider",
		"client_type":                           "confidential",
		"client_id":                             "community-app",
		"redirect_uris": []map[string]any{
			{"matching_mode": "strict", "url": "https://app.example.org/api/auth/callback"},
		},
		"sub_mode":    "hashed_user_id",
		"issuer_mode": "per_provider",
	}
}

// grantView renders an access or refresh token. Caller holds s.mu.
func (s *Server) grantView(g *grant, now time.Time) map[string]any {
	return map[string]any{
		"pk":         g.pk,
		"provider":   providerView(),
		"user":       s.userView(s.users[g.userPK], true, true),
		"is_expired": now.After(g.expires),
		"expires":    stamp(g.expires),
		"scope":      []string{"openid", "profile", "email"},
		"id_token":   "",
		"revoked":    false,
	}
}
