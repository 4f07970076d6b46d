package avatars

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/draw"
	"image/jpeg"
	"image/png"
	"strconv"
	"testing"

	"github.com/disintegration/imaging"
)

// sources returns test pictures scaled up to side×side in the three forms decoders return:
// NRGBA (a PNG with alpha), RGBA (an opaque PNG) and YCbCr (a JPEG).
func sources(b *testing.B, side int) map[string]image.Image {
	b.Helper()
	decode := func(file string) image.Image {
		img, _, err := image.Decode(bytes.NewReader(readTestdata(b, file)))
		if err != nil {
			b.Fatal(err)
		}
		return img
	}
	tux := imaging.Resize(decode("tux.png"), side, side, imaging.Lanczos)
	photo := imaging.Resize(decode("go-turns-two-280x360.jpeg"), side, side*360/280,
		imaging.Lanczos)

	rgba := image.NewRGBA(photo.Rect)
	draw.Draw(rgba, rgba.Rect, photo, image.Point{}, draw.Src)
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, photo, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	ycbcr, err := jpeg.Decode(&jpg)
	if err != nil {
		b.Fatal(err)
	}
	return map[string]image.Image{"tux-nrgba": tux, "photo-rgba": rgba, "photo-ycbcr": ycbcr}
}

// BenchmarkRender measures the crop, resize and PNG encoding of one avatar from a decoded
// source, and reports the size of the stored PNG.
func BenchmarkRender(b *testing.B) {
	for _, side := range []int{512, 4096} {
		srcs := sources(b, side)
		for _, name := range []string{"tux-nrgba", "photo-rgba", "photo-ycbcr"} {
			img := srcs[name]
			b.Run(name+"/"+strconv.Itoa(side), func(b *testing.B) {
				var out []byte
				for b.Loop() {
					var err error
					if out, err = render(img, 64); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(out)), "bytes/png")
			})
		}
	}
}

// BenchmarkProcess adds decoding to BenchmarkRender, from the PNG bytes the CDN sends to the
// stored bytes: at 128 px, the size the bridge asks the CDN for, and at 512 px.
func BenchmarkProcess(b *testing.B) {
	for _, side := range []int{128, 512} {
		var src bytes.Buffer
		if err := png.Encode(&src, sources(b, side)["tux-nrgba"]); err != nil {
			b.Fatal(err)
		}
		b.Run(strconv.Itoa(side), func(b *testing.B) {
			var out []byte
			for b.Loop() {
				var err error
				if out, err = Process(src.Bytes(), 64, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(out)), "bytes/png")
		})
	}
}

// Realistic public bases: a bridge on its own host name, and a bucket behind a CDN name with
// a prefix, as an operator would set BRIDGE_PUBLIC_URL and BRIDGE_S3_PUBLIC_URL.
const (
	exampleBridgeURL = "https://discord-bridge.auth.example-community.org"
	exampleS3URL     = "https://avatars.example-community.org/bridge-avatars"
)

// pictureValues returns the picture claim the bridge writes for an avatar, in each store, and
// the base64 data URI of the same PNG that the old property mapping wrote.
func pictureValues(t testing.TB, file string) (local, s3, dataURI string) {
	t.Helper()
	out, key := processed(t, file)
	ls, err := NewLocalStore(t.TempDir(), exampleBridgeURL)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := NewS3Store(S3Options{Endpoint: "s3.example.org", Bucket: "bridge-avatars",
		Prefix: "avatars", PublicURL: exampleS3URL})
	if err != nil {
		t.Fatal(err)
	}
	return ls.URL(key), ss.URL(key), "data:image/png;base64," +
		base64.StdEncoding.EncodeToString(out)
}

func TestPictureLength(t *testing.T) {
	const maxURL = 150
	for _, file := range []string{"tux.png", "go-turns-two-280x360.jpeg", "video-005.gray.png"} {
		local, s3, dataURI := pictureValues(t, file)
		t.Logf("%s: local URL %d bytes, S3 URL %d bytes, data URI %d bytes",
			file, len(local), len(s3), len(dataURI))
		for name, u := range map[string]string{"local": local, "s3": s3} {
			if len(u) > maxURL {
				t.Errorf("%s: %s URL is %d bytes, want at most %d: %s",
					file, name, len(u), maxURL, u)
			}
		}
		if len(dataURI) < 10*len(local) {
			t.Errorf("%s: data URI is %d bytes, not ten times the URL's %d", file,
				len(dataURI), len(local))
		}
	}
}

// BenchmarkPictureLength reports the length of the picture value: the URL the bridge writes
// against the data URI of the same avatar.
func BenchmarkPictureLength(b *testing.B) {
	var local, s3, dataURI string
	for b.Loop() {
		local, s3, dataURI = pictureValues(b, "go-turns-two-280x360.jpeg")
	}
	b.ReportMetric(float64(len(local)), "url-local-bytes")
	b.ReportMetric(float64(len(s3)), "url-s3-bytes")
	b.ReportMetric(float64(len(dataURI)), "data-uri-bytes")
}
