package authentikstub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	api "goauthentik.io/api/v3"
)

func TestServer_ListUsersPaging(t *testing.T) {
	s, c := newStub(t)
	seedUsers(s, 150)
	total := 151 // the seeded users and the token's service account

	tests := []struct {
		name     string
		page     int32
		pageSize int32 // 0: not sent
		want     api.Pagination
		results  int
	}{
		{
			name: "default page size", page: 1,
			want: api.Pagination{
				Next: 2, Previous: 0, Count: 151, Current: 1,
				TotalPages: 8, StartIndex: 1, EndIndex: 20,
			},
			results: 20,
		},
		{
			name: "page size capped at 100", page: 1, pageSize: 500,
			want: api.Pagination{
				Next: 2, Previous: 0, Count: 151, Current: 1,
				TotalPages: 2, StartIndex: 1, EndIndex: 100,
			},
			results: 100,
		},
		{
			name: "last page has next 0", page: 2, pageSize: 100,
			want: api.Pagination{
				Next: 0, Previous: 1, Count: 151, Current: 2,
				TotalPages: 2, StartIndex: 101, EndIndex: 151,
			},
			results: 51,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := c.CoreAPI.CoreUsersList(t.Context()).Page(tt.page)
			if tt.pageSize != 0 {
				req = req.PageSize(tt.pageSize)
			}
			got, _, err := req.Execute()
			if err != nil {
				t.Fatalf("list users: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Pagination, cmp.AllowUnexported(api.Pagination{}),
				ignoreAdditional); diff != "" {
				t.Errorf("pagination (-want +got):\n%s", diff)
			}
			if len(got.Results) != tt.results {
				t.Errorf("got %d results, want %d", len(got.Results), tt.results)
			}
		})
	}

	t.Run("every page together lists every user once, by username", func(t *testing.T) {
		var names []string
		for page := int32(1); page != 0; {
			got, _, err := c.CoreAPI.CoreUsersList(t.Context()).Page(page).PageSize(100).Execute()
			if err != nil {
				t.Fatalf("list users page %d: %v", page, err)
			}
			for _, u := range got.Results {
				names = append(names, u.Username)
			}
			page = int32(got.Pagination.Next)
		}
		if len(names) != total || !slices.IsSorted(names) {
			t.Errorf("got %d names (sorted %v), want %d sorted", len(names),
				slices.IsSorted(names), total)
		}
	})

	t.Run("filters", func(t *testing.T) {
		s.AddUser(User{Username: "gone", Name: "Gone", IsActive: false})
		got, _, err := c.CoreAPI.CoreUsersList(t.Context()).IsActive(false).Execute()
		if err != nil {
			t.Fatalf("list inactive: %v", err)
		}
		if len(got.Results) != 1 || got.Results[0].Username != "gone" {
			t.Errorf("is_active=false gave %d results, want only %q", len(got.Results), "gone")
		}
		got, _, err = c.CoreAPI.CoreUsersList(t.Context()).Username("user-042").Execute()
		if err != nil {
			t.Fatalf("list by username: %v", err)
		}
		if len(got.Results) != 1 || got.Results[0].Name != "User 42" {
			t.Errorf("username=user-042 gave %d results, want User 42", len(got.Results))
		}
		got, _, err = c.CoreAPI.CoreUsersList(t.Context()).Search("USER-14").Execute()
		if err != nil {
			t.Fatalf("search: %v", err)
		}
		if got.Pagination.Count != 10 {
			t.Errorf("search user-14 counted %v, want 10 (user-140 to user-149)",
				got.Pagination.Count)
		}
	})

	t.Run("page past the end is 404", func(t *testing.T) {
		_, resp, err := c.CoreAPI.CoreUsersList(t.Context()).Page(9).Execute()
		if got := statusOf(t, resp, err); got != http.StatusNotFound {
			t.Errorf("status %d, want 404", got)
		}
	})
}

// ignoreAdditional skips the generated models' AdditionalProperties maps.
var ignoreAdditional = cmp.FilterPath(func(p cmp.Path) bool {
	return p.Last().String() == ".AdditionalProperties"
}, cmp.Ignore())

func TestServer_ListGroups(t *testing.T) {
	s, c := newStub(t)
	users := seedUsers(s, 3)
	var admins string
	for i := range 120 {
		id := s.AddGroup(Group{Name: fmt.Sprintf("group-%03d", i)})
		if i == 0 {
			admins = id
		}
	}
	s.AddMember(admins, users[2])
	s.AddMember(admins, users[0])
	superUUID := s.AddGroup(Group{Name: "authentik Admins", IsSuperuser: true})

	t.Run("paging", func(t *testing.T) {
		seen := 0
		for page := int32(1); page != 0; {
			got, _, err := c.CoreAPI.CoreGroupsList(t.Context()).Page(page).PageSize(1000).Execute()
			if err != nil {
				t.Fatalf("list groups page %d: %v", page, err)
			}
			if len(got.Results) > 100 {
				t.Fatalf("page %d has %d results, want at most 100", page, len(got.Results))
			}
			seen += len(got.Results)
			page = int32(got.Pagination.Next)
		}
		if seen != 121 {
			t.Errorf("saw %d groups, want 121", seen)
		}
	})

	t.Run("members included by default", func(t *testing.T) {
		got, _, err := c.CoreAPI.CoreGroupsRetrieve(t.Context(), admins).Execute()
		if err != nil {
			t.Fatalf("retrieve group: %v", err)
		}
		want := []int32{users[0], users[2]}
		if diff := cmp.Diff(want, got.Users); diff != "" {
			t.Errorf("users (-want +got):\n%s", diff)
		}
		if len(got.UsersObj) != 2 || got.UsersObj[0].Username != "user-000" {
			t.Errorf("users_obj = %+v, want user-000 and user-002", got.UsersObj)
		}
	})

	t.Run("include_users=false keeps pks, drops objects", func(t *testing.T) {
		got, _, err := c.CoreAPI.CoreGroupsList(t.Context()).Name("group-000").
			IncludeUsers(false).Execute()
		if err != nil {
			t.Fatalf("list groups: %v", err)
		}
		if len(got.Results) != 1 {
			t.Fatalf("got %d groups, want 1", len(got.Results))
		}
		if g := got.Results[0]; len(g.Users) != 2 || g.UsersObj != nil {
			t.Errorf("users = %v, users_obj = %v; want 2 pks and no objects", g.Users, g.UsersObj)
		}
	})

	t.Run("superuser filter and derived user flag", func(t *testing.T) {
		got, _, err := c.CoreAPI.CoreGroupsList(t.Context()).IsSuperuser(true).Execute()
		if err != nil {
			t.Fatalf("list groups: %v", err)
		}
		if len(got.Results) != 1 || got.Results[0].Pk != superUUID {
			t.Errorf("superuser groups = %d, want only %s", len(got.Results), superUUID)
		}
		s.AddMember(superUUID, users[1])
		u, _, err := c.CoreAPI.CoreUsersRetrieve(t.Context(), users[1]).Execute()
		if err != nil {
			t.Fatalf("retrieve user: %v", err)
		}
		if !u.IsSuperuser {
			t.Error("member of a superuser group: is_superuser = false, want true")
		}
	})

	t.Run("unknown group is 404", func(t *testing.T) {
		_, resp, err := c.CoreAPI.CoreGroupsRetrieve(t.Context(),
			"00000000-0000-4000-8000-000000000000").Execute()
		if got := statusOf(t, resp, err); got != http.StatusNotFound {
			t.Errorf("status %d, want 404", got)
		}
	})
}

func TestServer_RetrieveUser(t *testing.T) {
	s, c := newStub(t)
	pk := s.AddUser(User{
		Username: "ada", Name: "Ada Lovelace", Email: "ada@example.org", IsActive: true,
		Attributes: json.RawMessage(`{"goauthentik.io/user/sources":["Discord"]}`),
	})
	gid := s.AddGroup(Group{Name: "members"})
	s.AddMember(gid, pk)

	got, _, err := c.CoreAPI.CoreUsersRetrieve(t.Context(), pk).Execute()
	if err != nil {
		t.Fatalf("retrieve: %v", err)
	}
	if got.Pk != pk || got.Username != "ada" || got.Type == nil ||
		*got.Type != api.USERTYPEENUM_EXTERNAL {
		t.Errorf("got pk %d username %q type %v, want %d ada external", got.Pk, got.Username,
			got.Type, pk)
	}
	if diff := cmp.Diff([]string{gid}, got.Groups); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if len(got.GroupsObj) != 1 || got.GroupsObj[0].Name != "members" {
		t.Errorf("groups_obj = %+v, want members", got.GroupsObj)
	}

	_, resp, err := c.CoreAPI.CoreUsersRetrieve(t.Context(), 9999).Execute()
	if got := statusOf(t, resp, err); got != http.StatusNotFound {
		t.Errorf("unknown user: status %d, want 404", got)
	}

	me, _, err := c.CoreAPI.CoreUsersMeRetrieve(t.Context()).Execute()
	if err != nil {
		t.Fatalf("me: %v", err)
	}
	if me.User.Pk != s.ServiceAccountPK() || me.User.Type == nil ||
		*me.User.Type != api.USERTYPEENUM_SERVICE_ACCOUNT {
		t.Errorf("me = pk %d type %v, want the service account %d", me.User.Pk, me.User.Type,
			s.ServiceAccountPK())
	}
}

func TestServer_PatchUser(t *testing.T) {
	const snowflake = "1187654321098765431"
	seeded := `{"goauthentik.io/user/sources":["Discord"],"discord":{"id":` + snowflake +
		`},"note":"<b>&</b>"}`

	s, c := newStub(t)
	pk := s.AddUser(User{Username: "ada", Name: "Ada", IsActive: true,
		Attributes: json.RawMessage(seeded)})
	keep := s.AddGroup(Group{Name: "keep"})
	drop := s.AddGroup(Group{Name: "drop"})
	s.AddMember(keep, pk)
	s.AddMember(drop, pk)

	t.Run("raw attributes are served byte-identical", func(t *testing.T) {
		_, resp, err := c.CoreAPI.CoreUsersRetrieve(t.Context(), pk).Execute()
		if err != nil {
			t.Fatalf("retrieve: %v", err)
		}
		if body := readBody(t, resp); !strings.Contains(string(body), `"attributes":`+seeded) {
			t.Errorf("body %s does not embed the attributes %s verbatim", body, seeded)
		}
		if got := string(s.UserAttributes(pk)); got != seeded {
			t.Errorf("UserAttributes = %s, want %s", got, seeded)
		}
	})

	t.Run("attributes are replaced as a whole", func(t *testing.T) {
		patch := api.NewPatchedUserRequest()
		patch.SetAttributes(map[string]any{"discord": map[string]any{"id": json.Number(snowflake)}})
		got, _, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), pk).
			PatchedUserRequest(*patch).Execute()
		if err != nil {
			t.Fatalf("patch: %v", err)
		}
		want := `{"discord":{"id":` + snowflake + `}}`
		if got := string(s.UserAttributes(pk)); got != want {
			t.Errorf("stored attributes = %s, want %s", got, want)
		}
		if diff := cmp.Diff([]string{"drop", "keep"}, s.UserGroupNames(pk)); diff != "" {
			t.Errorf("a PATCH without groups changed them (-want +got):\n%s", diff)
		}
		if got.Name != "Ada" {
			t.Errorf("name = %q, want unchanged Ada", got.Name)
		}
	})

	t.Run("groups are replaced as a whole", func(t *testing.T) {
		patch := api.NewPatchedUserRequest()
		patch.SetGroups([]string{keep})
		if _, _, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), pk).
			PatchedUserRequest(*patch).Execute(); err != nil {
			t.Fatalf("patch: %v", err)
		}
		if diff := cmp.Diff([]string{"keep"}, s.UserGroupNames(pk)); diff != "" {
			t.Errorf("groups (-want +got):\n%s", diff)
		}
	})

	t.Run("an empty map wipes the attributes", func(t *testing.T) {
		patch := api.NewPatchedUserRequest()
		patch.SetAttributes(map[string]any{})
		if _, _, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), pk).
			PatchedUserRequest(*patch).Execute(); err != nil {
			t.Fatalf("patch: %v", err)
		}
		if got := string(s.UserAttributes(pk)); got != "{}" {
			t.Errorf("attributes = %s, want {}", got)
		}
	})

	t.Run("unknown group is refused and nothing changes", func(t *testing.T) {
		patch := api.NewPatchedUserRequest()
		patch.SetGroups([]string{"00000000-0000-4000-8000-000000000000"})
		patch.SetName("Changed")
		_, resp, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), pk).
			PatchedUserRequest(*patch).Execute()
		if got := statusOf(t, resp, err); got != http.StatusBadRequest {
			t.Errorf("status %d, want 400", got)
		}
		if u, _ := s.User(pk); u.Name != "Ada" {
			t.Errorf("name = %q after a refused PATCH, want Ada", u.Name)
		}
	})

	t.Run("PUT is counted apart and empties groups it leaves out", func(t *testing.T) {
		s.ResetCounts()
		put := api.NewUserRequest("ada", "Ada L.")
		if _, _, err := c.CoreAPI.CoreUsersUpdate(t.Context(), pk).UserRequest(*put).
			Execute(); err != nil {
			t.Fatalf("put: %v", err)
		}
		if got := s.Counts(); got.Puts != 1 || got.Writes != 1 {
			t.Errorf("counts = %+v, want 1 put among 1 write", got)
		}
		if got := s.UserGroupNames(pk); len(got) != 0 {
			t.Errorf("groups after PUT without groups = %v, want none", got)
		}
	})
}

func TestServer_Membership(t *testing.T) {
	s, c := newStub(t)
	pk := seedUsers(s, 1)[0]
	gid := s.AddGroup(Group{Name: "members"})
	unknownGroup := "00000000-0000-4000-8000-000000000000"

	steps := []struct {
		name   string
		add    bool
		group  string
		user   int32
		status int
		member bool
	}{
		{"add", true, gid, pk, http.StatusNoContent, true},
		{"add again", true, gid, pk, http.StatusNoContent, true},
		{"add unknown user", true, gid, 4242, http.StatusNotFound, true},
		{"add to unknown group", true, unknownGroup, pk, http.StatusNotFound, true},
		{"remove", false, gid, pk, http.StatusNoContent, false},
		{"remove again", false, gid, pk, http.StatusNoContent, false},
		{"remove unknown user", false, gid, 4242, http.StatusNotFound, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			body := *api.NewUserAccountRequest(st.user)
			var resp *http.Response
			var err error
			if st.add {
				resp, err = c.CoreAPI.CoreGroupsAddUserCreate(t.Context(), st.group).
					UserAccountRequest(body).Execute()
			} else {
				resp, err = c.CoreAPI.CoreGroupsRemoveUserCreate(t.Context(), st.group).
					UserAccountRequest(body).Execute()
			}
			if resp == nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != st.status {
				t.Errorf("status %d, want %d (err %v)", resp.StatusCode, st.status, err)
			}
			if got := slices.Contains(s.GroupMembers(gid), pk); got != st.member {
				t.Errorf("member = %v, want %v", got, st.member)
			}
		})
	}
}

func TestServer_Auth(t *testing.T) {
	s, _ := newStub(t)
	tests := []struct {
		name   string
		auth   string
		status int
		detail string
	}{
		{"missing", "", http.StatusForbidden, "Authentication credentials were not provided."},
		{"wrong token", "Bearer nope", http.StatusForbidden, "Token invalid/expired"},
		{
			"other scheme", "Token " + testToken, http.StatusForbidden,
			"Unsupported authentication type",
		},
		{"right token", "Bearer " + testToken, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := doRaw(t, s, "GET", "/api/v3/core/users/me/", tt.auth, "")
			if got.status != tt.status {
				t.Fatalf("status %d, want %d", got.status, tt.status)
			}
			if tt.detail != "" {
				if d := mustJSON(t, got.body)["detail"]; d != tt.detail {
					t.Errorf("detail %q, want %q", d, tt.detail)
				}
			}
		})
	}

	t.Run("generated client with a wrong token", func(t *testing.T) {
		c := newClient(s.URL(), "wrong")
		_, resp, err := c.CoreAPI.CoreUsersList(t.Context()).Execute()
		if got := statusOf(t, resp, err); got != http.StatusForbidden {
			t.Errorf("status %d, want 403", got)
		}
	})
}

func TestServer_SchemaViolation(t *testing.T) {
	s, _ := newStub(t)
	pk := seedUsers(s, 1)[0]
	gid := s.AddGroup(Group{Name: "members"})

	got := doRaw(t, s, "POST", "/api/v3/core/groups/"+gid+"/add_user/", "Bearer "+testToken,
		`{"pk":"x"}`)
	if got.status != http.StatusBadRequest {
		t.Errorf("status %d, want 400", got.status)
	}
	if _, ok := mustJSON(t, got.body)["pk"]; !ok {
		t.Errorf("body %s has no error under pk", got.body)
	}
	if slices.Contains(s.GroupMembers(gid), pk) {
		t.Error("an invalid request changed the membership")
	}

	v := s.Violations()
	if len(v) != 2 {
		t.Fatalf("got %d violations, want one per schema:\n%s", len(v), strings.Join(v, "\n"))
	}
	for i, release := range []string{"2026.8.0", "2026.2.2"} {
		if !strings.Contains(v[i], "POST /api/v3/core/groups/"+gid+"/add_user/") ||
			!strings.Contains(v[i], release) || !strings.Contains(v[i], "pk") {
			t.Errorf("violation %q does not name the route, schema %s and field", v[i], release)
		}
	}
	s.ResetViolations()

	t.Run("route outside the schema", func(t *testing.T) {
		got := doRaw(t, s, "GET", "/api/v3/core/no_such_thing/", "Bearer "+testToken, "")
		if got.status != http.StatusNotFound {
			t.Errorf("status %d, want 404", got.status)
		}
		if v := s.Violations(); len(v) != 2 || !strings.Contains(v[0], "not an operation") {
			t.Errorf("violations = %q, want the missing route per schema", v)
		}
		s.ResetViolations()
	})

	t.Run("route the stub does not serve", func(t *testing.T) {
		got := doRaw(t, s, "DELETE", fmt.Sprintf("/api/v3/core/users/%d/", pk),
			"Bearer "+testToken, "")
		if got.status != http.StatusMethodNotAllowed {
			t.Errorf("status %d, want 405", got.status)
		}
		if v := s.Violations(); len(v) != 2 || !strings.Contains(v[0], "not served by the stub") {
			t.Errorf("violations = %q, want the unserved operation per schema", v)
		}
		s.ResetViolations()
	})
}

func TestServer_SourcesSessionsTokens(t *testing.T) {
	s, c := newStub(t)
	users := seedUsers(s, 3)
	s.AddSource("discord", "Discord")
	s.AddConnection("discord", users[0], "1187654321098765431")
	s.AddConnection("discord", users[1], "118765432109876543")
	s.AddConnection("github", users[2], "1187654321098765431")

	t.Run("oauth source", func(t *testing.T) {
		src, _, err := c.SourcesAPI.SourcesOauthRetrieve(t.Context(), "discord").Execute()
		if err != nil {
			t.Fatalf("retrieve source: %v", err)
		}
		if src.Slug != "discord" || src.ProviderType != api.PROVIDERTYPEENUM_DISCORD {
			t.Errorf("source = %s %s, want discord", src.Slug, src.ProviderType)
		}
		_, resp, err := c.SourcesAPI.SourcesOauthRetrieve(t.Context(), "nope").Execute()
		if got := statusOf(t, resp, err); got != http.StatusNotFound {
			t.Errorf("unknown source: status %d, want 404", got)
		}
	})

	t.Run("connections by source and substring search", func(t *testing.T) {
		got, _, err := c.SourcesAPI.SourcesUserConnectionsOauthList(t.Context()).
			SourceSlug("discord").Search("1187654321098765431").Execute()
		if err != nil {
			t.Fatalf("list connections: %v", err)
		}
		if len(got.Results) != 1 || got.Results[0].User != users[0] {
			t.Errorf("got %d connections, want the one of user %d", len(got.Results), users[0])
		}
		got, _, err = c.SourcesAPI.SourcesUserConnectionsOauthList(t.Context()).
			SourceSlug("discord").Search("118765432109876543").Execute()
		if err != nil {
			t.Fatalf("list connections: %v", err)
		}
		if len(got.Results) != 2 {
			t.Errorf("substring search matched %d connections, want 2", len(got.Results))
		}
	})

	t.Run("sessions and tokens are listed and deleted", func(t *testing.T) {
		sid := s.AddSession(users[0])
		s.AddSession(users[1])
		at := s.AddAccessToken(users[0])
		rt := s.AddRefreshToken(users[0])

		sessions, _, err := c.CoreAPI.CoreAuthenticatedSessionsList(t.Context()).
			UserUsername("user-000").Execute()
		if err != nil {
			t.Fatalf("list sessions: %v", err)
		}
		if len(sessions.Results) != 1 || sessions.Results[0].GetUuid() != sid {
			t.Fatalf("sessions = %d, want only %s", len(sessions.Results), sid)
		}
		_, err = c.CoreAPI.CoreAuthenticatedSessionsDestroy(t.Context(), sid).Execute()
		if err != nil {
			t.Fatalf("delete session: %v", err)
		}

		access, _, err := c.Oauth2API.Oauth2AccessTokensList(t.Context()).User(users[0]).Execute()
		if err != nil {
			t.Fatalf("list access tokens: %v", err)
		}
		if len(access.Results) != 1 || access.Results[0].Pk != at {
			t.Fatalf("access tokens = %d, want only %d", len(access.Results), at)
		}
		if _, err := c.Oauth2API.Oauth2AccessTokensDestroy(t.Context(), at).Execute(); err != nil {
			t.Fatalf("delete access token: %v", err)
		}
		refresh, _, err := c.Oauth2API.Oauth2RefreshTokensList(t.Context()).User(users[0]).Execute()
		if err != nil || len(refresh.Results) != 1 {
			t.Fatalf("list refresh tokens: %v", err)
		}
		if _, err := c.Oauth2API.Oauth2RefreshTokensDestroy(t.Context(), rt).Execute(); err != nil {
			t.Fatalf("delete refresh token: %v", err)
		}

		got := []int{s.SessionCount(users[0]), s.AccessTokenCount(users[0]),
			s.RefreshTokenCount(users[0]), s.SessionCount(users[1])}
		if diff := cmp.Diff([]int{0, 0, 0, 1}, got); diff != "" {
			t.Errorf("sessions, access, refresh of the user, other's sessions "+
				"(-want +got):\n%s", diff)
		}
		resp, err := c.CoreAPI.CoreAuthenticatedSessionsDestroy(t.Context(), sid).Execute()
		if got := statusOf(t, resp, err); got != http.StatusNotFound {
			t.Errorf("second delete: status %d, want 404", got)
		}
	})
}

func TestServer_SetDown(t *testing.T) {
	s, c := newStub(t)
	url := s.URL()
	ping := func() error {
		_, _, err := c.CoreAPI.CoreUsersMeRetrieve(t.Context()).Execute()
		return err
	}
	if err := ping(); err != nil {
		t.Fatalf("before: %v", err)
	}

	if err := s.SetDown(true); err != nil {
		t.Fatalf("SetDown(true): %v", err)
	}
	if err := ping(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("while down: err = %v, want connection refused", err)
	}

	if err := s.SetDown(false); err != nil {
		t.Fatalf("SetDown(false): %v", err)
	}
	if s.URL() != url {
		t.Errorf("URL changed from %s to %s", url, s.URL())
	}
	if err := ping(); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestServer_Faults(t *testing.T) {
	s, c := newStub(t)

	t.Run("FailNext", func(t *testing.T) {
		s.ResetCounts()
		s.FailNext(2, http.StatusBadGateway)
		for i := range 2 {
			_, resp, err := c.CoreAPI.CoreUsersMeRetrieve(t.Context()).Execute()
			if got := statusOf(t, resp, err); got != http.StatusBadGateway {
				t.Errorf("call %d: status %d, want 502", i, got)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Errorf("call %d: content type %q, want an HTML error page", i, ct)
			}
		}
		if _, _, err := c.CoreAPI.CoreUsersMeRetrieve(t.Context()).Execute(); err != nil {
			t.Errorf("third call: %v", err)
		}
		if got := s.Counts().ByRoute["GET /api/v3/core/users/me/"]; got != 3 {
			t.Errorf("counted %d calls, want 3 (failed ones count)", got)
		}
	})

	t.Run("SetFailureRate", func(t *testing.T) {
		for _, tt := range []struct {
			rate float64
			want int
		}{{1, http.StatusInternalServerError}, {0, http.StatusOK}} {
			s.SetFailureRate(tt.rate)
			got := doRaw(t, s, "GET", "/api/v3/core/users/me/", "Bearer "+testToken, "")
			if got.status != tt.want {
				t.Errorf("rate %v: status %d, want %d", tt.rate, got.status, tt.want)
			}
		}
	})
}

func TestServer_Seeding(t *testing.T) {
	s, _ := newStub(t)
	pk := s.AddUser(User{Username: "ada", IsActive: true, Attributes: json.RawMessage(`[1]`)})
	s.AddMember("00000000-0000-4000-8000-000000000000", pk)

	if got := string(s.UserAttributes(pk)); got != "{}" {
		t.Errorf("attributes = %s, want {} in place of a non-object", got)
	}
	if v := s.Violations(); len(v) != 2 {
		t.Errorf("violations = %q, want one for the attributes and one for the group", v)
	}
	s.ResetViolations()
}

func TestNew_NoValidate(t *testing.T) {
	s, err := New(Options{Token: testToken, NoValidate: true})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	gid := s.AddGroup(Group{Name: "members"})

	// Without validation the view itself still refuses a pk that is not a user.
	got := doRaw(t, s, "POST", "/api/v3/core/groups/"+gid+"/add_user/", "Bearer "+testToken,
		`{"pk":"x"}`)
	if got.status != http.StatusNotFound {
		t.Errorf("status %d, want 404", got.status)
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations = %q, want none with validation off", v)
	}
}

func TestServer_Concurrent(t *testing.T) {
	s, c := newStub(t)
	users := seedUsers(s, 8)
	gid := s.AddGroup(Group{Name: "members"})
	s.ResetCounts()

	errs := make(chan error, len(users))
	for i, pk := range users {
		go func() {
			errs <- func() error {
				for range 5 {
					body := *api.NewUserAccountRequest(pk)
					if _, err := c.CoreAPI.CoreGroupsAddUserCreate(t.Context(), gid).
						UserAccountRequest(body).Execute(); err != nil {
						return fmt.Errorf("add: %w", err)
					}
					patch := api.NewPatchedUserRequest()
					patch.SetAttributes(map[string]any{"n": i})
					if _, _, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), pk).
						PatchedUserRequest(*patch).Execute(); err != nil {
						return fmt.Errorf("patch: %w", err)
					}
					if _, _, err := c.CoreAPI.CoreGroupsList(t.Context()).Execute(); err != nil {
						return fmt.Errorf("list: %w", err)
					}
				}
				return nil
			}()
		}()
	}
	for range users {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	if got := len(s.GroupMembers(gid)); got != len(users) {
		t.Errorf("group has %d members, want %d", got, len(users))
	}
	if got := s.Counts(); got.Reads != 40 || got.Writes != 80 || got.Puts != 0 {
		t.Errorf("counts = %d reads, %d writes, %d puts; want 40, 80, 0", got.Reads, got.Writes,
			got.Puts)
	}
}

func TestRoutes_InSchemas(t *testing.T) {
	if err := loadSchemas(); err != nil {
		t.Fatalf("load schemas: %v", err)
	}
	for _, rt := range routes {
		for _, sc := range apiSchemas {
			t.Run(rt.method+" "+rt.template+" "+sc.release, func(t *testing.T) {
				req, err := http.NewRequest(rt.method, "http://stub"+rt.template, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := findRoute(sc, req, &rt, nil); err != nil {
					t.Errorf("the stub serves an operation the schema lacks: %v", err)
				}
			})
		}
	}
}

func TestServer_AttributeFilter(t *testing.T) {
	s, c := newStub(t)
	s.AddGroup(Group{Name: "as-string", Attributes: json.RawMessage(
		`{"discord_role_id":"1187654321098765431"}`)})
	s.AddGroup(Group{Name: "as-number", Attributes: json.RawMessage(
		`{"discord_role_id":1187654321098765431}`)})
	s.AddGroup(Group{Name: "nested", Attributes: json.RawMessage(
		`{"discord":{"role":{"id":"42"}}}`)})
	s.AddGroup(Group{Name: "plain"})

	tests := []struct {
		filter string
		want   []string
	}{
		{`{"discord_role_id":"1187654321098765431"}`, []string{"as-string"}},
		{`{"discord_role_id":1187654321098765431}`, []string{"as-number"}},
		{`{"discord_role_id":1187654321098765432}`, nil},
		{`{"discord__role__id":"42"}`, []string{"nested"}},
		{`{"discord__role__id__exact":"42"}`, []string{"nested"}},
		{`{"discord__role__id__in":["41","42"]}`, []string{"nested"}},
		{`{"discord__role__id__in":["41"]}`, nil},
		{`{"discord_role_id__in":["1187654321098765431",1187654321098765431]}`,
			[]string{"as-number", "as-string"}},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			got, _, err := c.CoreAPI.CoreGroupsList(t.Context()).Attributes(tt.filter).Execute()
			if err != nil {
				t.Fatalf("list groups: %v", err)
			}
			var names []string
			for _, g := range got.Results {
				names = append(names, g.Name)
			}
			if diff := cmp.Diff(tt.want, names); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("a filter that is not an object is refused", func(t *testing.T) {
		_, resp, err := c.CoreAPI.CoreGroupsList(t.Context()).Attributes(`["x"]`).Execute()
		if got := statusOf(t, resp, err); got != http.StatusBadRequest {
			t.Errorf("status %d, want 400", got)
		}
	})

	t.Run("users, and a filter Authentik could not evaluate", func(t *testing.T) {
		pks := seedUsers(s, 3)
		s.SetUserAttributes(pks[0], json.RawMessage(`{"discord":{"id":"7"}}`))
		s.SetUserAttributes(pks[1], json.RawMessage(`{"discord":{"id":"8"}}`))
		list := func() int {
			got, _, err := c.CoreAPI.CoreUsersList(t.Context()).
				Attributes(`{"discord__id__in":["7","9"]}`).Execute()
			if err != nil {
				t.Fatalf("list users: %v", err)
			}
			return len(got.Results)
		}
		if n := list(); n != 1 {
			t.Errorf("%d users match, want 1", n)
		}
		// The answers follow every kind of change made after the first filtered list.
		s.SetUserAttributes(pks[2], json.RawMessage(`{"discord":{"id":"9"}}`))
		if n := list(); n != 2 {
			t.Errorf("after another writer set a matching id: %d users match, want 2", n)
		}
		patch := func(pk int32, id string) {
			_, _, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), pk).PatchedUserRequest(
				api.PatchedUserRequest{Attributes: map[string]any{"discord": map[string]any{
					"id": id}}}).Execute()
			if err != nil {
				t.Fatalf("patch user: %v", err)
			}
		}
		patch(pks[0], "70")
		if n := list(); n != 1 {
			t.Errorf("after a PATCH changed a matching id: %d users match, want 1", n)
		}
		patch(pks[1], "7")
		if n := list(); n != 2 {
			t.Errorf("after a PATCH set a matching id: %d users match, want 2", n)
		}
		s.DeleteUser(pks[2])
		if n := list(); n != 1 {
			t.Errorf("after a matching user was deleted: %d users match, want 1", n)
		}
		s.SetIgnoreAttributeFilter(true)
		defer s.SetIgnoreAttributeFilter(false)
		// Every user: the two left and the token's owner.
		if n := list(); n != 3 {
			t.Errorf("with the filter ignored: %d users, want all 3", n)
		}
	})
}

func TestServer_Mutators(t *testing.T) {
	s, c := newStub(t)
	users := seedUsers(s, 2)
	gid := s.AddGroup(Group{Name: "members"})
	s.AddMember(gid, users[0])
	s.AddMember(gid, users[1])
	s.AddSession(users[1])
	conn := s.AddConnection("discord", users[0], "1187654321098765431")

	s.SetGroupAttributes(gid, json.RawMessage(`{"discord_role_id":["1","2"]}`))
	g, _, err := c.CoreAPI.CoreGroupsRetrieve(t.Context(), gid).Execute()
	if err != nil {
		t.Fatalf("retrieve group: %v", err)
	}
	want := map[string]any{"discord_role_id": []any{"1", "2"}}
	if diff := cmp.Diff(want, g.Attributes); diff != "" {
		t.Errorf("group attributes (-want +got):\n%s", diff)
	}

	s.SetUserAttributes(users[0], json.RawMessage(`{"other_writer":true}`))
	if got := string(s.UserAttributes(users[0])); got != `{"other_writer":true}` {
		t.Errorf("attributes = %s after SetUserAttributes", got)
	}

	s.RemoveMember(gid, users[0])
	s.DeleteUser(users[1])
	if got := s.GroupMembers(gid); len(got) != 0 {
		t.Errorf("members = %v, want none after RemoveMember and DeleteUser", got)
	}
	if got := s.SessionCount(users[1]); got != 0 {
		t.Errorf("a deleted user keeps %d sessions", got)
	}

	s.DeleteConnection(conn)
	s.DeleteGroup(gid)
	conns, _, err := c.SourcesAPI.SourcesUserConnectionsOauthList(t.Context()).Execute()
	if err != nil {
		t.Fatalf("list connections: %v", err)
	}
	groups, _, err := c.CoreAPI.CoreGroupsList(t.Context()).Execute()
	if err != nil {
		t.Fatalf("list groups: %v", err)
	}
	if len(conns.Results) != 0 || len(groups.Results) != 0 {
		t.Errorf("left %d connections and %d groups, want none", len(conns.Results),
			len(groups.Results))
	}

	t.Run("PATCH of scalar fields", func(t *testing.T) {
		patch := api.NewPatchedUserRequest()
		patch.SetIsActive(false)
		patch.SetName("Renamed")
		got, _, err := c.CoreAPI.CoreUsersPartialUpdate(t.Context(), users[0]).
			PatchedUserRequest(*patch).Execute()
		if err != nil {
			t.Fatalf("patch: %v", err)
		}
		if got.GetIsActive() || got.Name != "Renamed" {
			t.Errorf("is_active %v, name %q; want false, Renamed", got.GetIsActive(), got.Name)
		}
		if u, _ := s.User(users[0]); u.IsActive || u.Name != "Renamed" {
			t.Errorf("stored user = %+v, want inactive and renamed", u)
		}
	})
}
