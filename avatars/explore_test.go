package avatars

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"testing"

	"github.com/disintegration/imaging"
)

func TestExplore(t *testing.T) {
	ents, _ := os.ReadDir("testdata")
	for _, e := range ents {
		data, _ := os.ReadFile("testdata/" + e.Name())
		src, _, err := image.Decode(bytes.NewReader(data))
		if err != nil {
			continue
		}
		sq := imaging.Fill(src, 64, 64, imaging.Center, imaging.Lanczos)
		c := compact(sq)
		var sizes []int
		for _, lvl := range []png.CompressionLevel{png.DefaultCompression, png.BestSpeed, png.BestCompression} {
			enc := png.Encoder{CompressionLevel: lvl}
			var buf bytes.Buffer
			enc.Encode(&buf, c)
			sizes = append(sizes, buf.Len())
		}
		t.Logf("%-40s %T %v", e.Name(), c, sizes)
	}
}
