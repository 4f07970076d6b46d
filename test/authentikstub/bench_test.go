package authentikstub

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"testing"
)

// BenchmarkServer_RetrieveUser measures one user read over loopback, with and without schema
// validation, so load tests of the bridge know what the stand-in adds per call.
func BenchmarkServer_RetrieveUser(b *testing.B) {
	for _, noValidate := range []bool{false, true} {
		b.Run(fmt.Sprintf("validate=%v", !noValidate), func(b *testing.B) {
			s, err := New(Options{Token: testToken, NoValidate: noValidate})
			if err != nil {
				b.Fatalf("New: %v", err)
			}
			b.Cleanup(func() { _ = s.Close() })
			pk := seedUsers(s, 1)[0]
			gid := s.AddGroup(Group{Name: "members"})
			s.AddMember(gid, pk)
			url := fmt.Sprintf("%s/api/v3/core/users/%d/", s.URL(), pk)

			for b.Loop() {
				req, _ := http.NewRequestWithContext(b.Context(), "GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatalf("get: %v", err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			if v := s.Violations(); len(v) > 0 {
				b.Fatalf("violations: %q", v)
			}
		})
	}
}

// BenchmarkServer_ListUsersByDiscordIDs is the batch read of a full pass over a guild of
// 100,000 linked users: eight Discord IDs, matched against every user's attributes.
func BenchmarkServer_ListUsersByDiscordIDs(b *testing.B) {
	s, err := New(Options{Token: testToken, NoValidate: true})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	const n = 100000
	ids := make([]string, 0, 8)
	for i := range n {
		id := fmt.Sprint(300000000000000000 + i)
		s.AddUser(User{Username: "u" + id, IsActive: true, Type: "external",
			Attributes: json.RawMessage(`{"discord":{"id":"` + id + `","roles":["1","2"]},` +
				`"avatar":"https://avatars.example.org/x.png"}`)})
		if i%(n/8) == 0 {
			ids = append(ids, id)
		}
	}
	filter, _ := json.Marshal(map[string][]string{"discord__id__in": ids})
	url := s.URL() + "/api/v3/core/users/?include_groups=false&page_size=100&attributes=" +
		neturl.QueryEscape(string(filter))

	for b.Loop() {
		req, _ := http.NewRequestWithContext(b.Context(), "GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatalf("get: %v", err)
		}
		var page struct {
			Results []json.RawMessage `json:"results"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		_ = resp.Body.Close()
		if err != nil || len(page.Results) != len(ids) {
			b.Fatalf("status %d, %d users, %v; want %d", resp.StatusCode, len(page.Results), err,
				len(ids))
		}
	}
}
