package authentikstub

import (
	"fmt"
	"io"
	"net/http"
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
