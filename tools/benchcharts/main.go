// Command benchcharts draws the charts of BENCHMARKS.md from the metrics.json
// that `herald bench suite` (or `herald bench report`) writes: one PNG per
// headline metric, a horizontal bar per server with its median over the
// rounds and a whisker for the range. Standard library and basicfont only.
//
//	go run . -in ../../docs/bench/metrics.json -out ../../docs/bench
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

type metricsFile struct {
	Rounds  int `json:"rounds"`
	Metrics []struct {
		Key           string `json:"key"`
		Title         string `json:"title"`
		Unit          string `json:"unit"`
		LowerIsBetter bool   `json:"lower_is_better"`
		Targets       []struct {
			Name   string  `json:"name"`
			Median float64 `json:"median"`
			Min    float64 `json:"min"`
			Max    float64 `json:"max"`
			N      int     `json:"n"`
			Failed int     `json:"failed"`
		} `json:"targets"`
	} `json:"metrics"`
}

var (
	white  = color.RGBA{255, 255, 255, 255}
	ink    = color.RGBA{33, 37, 41, 255}
	grid   = color.RGBA{222, 226, 230, 255}
	herald = color.RGBA{13, 110, 253, 255}
	raw    = color.RGBA{108, 117, 125, 255}
	peer   = color.RGBA{253, 126, 20, 255}
)

func main() {
	in := flag.String("in", "metrics.json", "metrics.json from herald bench suite/report")
	out := flag.String("out", ".", "directory for the PNGs")
	flag.Parse()
	b, err := os.ReadFile(*in)
	if err != nil {
		fail(err)
	}
	var mf metricsFile
	if err := json.Unmarshal(b, &mf); err != nil {
		fail(err)
	}
	for _, m := range mf.Metrics {
		var bars []bar
		for _, t := range m.Targets {
			if t.N == 0 {
				bars = append(bars, bar{name: t.Name, failed: true})
				continue
			}
			bars = append(bars, bar{name: t.Name, median: t.Median, min: t.Min, max: t.Max, n: t.N})
		}
		note := "higher is better"
		if m.LowerIsBetter {
			note = "lower is better"
		}
		img := chart(m.Title+" ("+m.Unit+")", note+"; median of "+strconv.Itoa(mf.Rounds)+" rounds, whisker = range", m.Unit, bars)
		path := filepath.Join(*out, m.Key+".png")
		if err := writePNG(path, img); err != nil {
			fail(err)
		}
		fmt.Println(path)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchcharts:", err)
	os.Exit(1)
}

type bar struct {
	name             string
	median, min, max float64
	n                int
	failed           bool
}

// chart draws at 1x with the 7x13 basicfont, then scales by 2 (crisp pixels).
func chart(title, note, unit string, bars []bar) image.Image {
	const (
		w      = 480
		left   = 90
		right  = 70
		top    = 40
		rowH   = 22
		bottom = 10
	)
	h := top + rowH*len(bars) + bottom
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	text(img, 8, 14, title, ink)
	text(img, 8, 30, note, raw)
	hi := 0.0
	for _, b := range bars {
		hi = math.Max(hi, math.Max(b.median, b.max))
	}
	if hi == 0 {
		hi = 1
	}
	scale := float64(w-left-right) / hi
	for i := 0; i <= 4; i++ {
		x := left + int(float64(w-left-right)*float64(i)/4)
		fill(img, image.Rect(x, top-4, x+1, h-bottom), grid)
	}
	for i, b := range bars {
		y := top + i*rowH
		text(img, 8, y+14, b.name, ink)
		if b.failed {
			text(img, left+4, y+14, "failed", peer)
			continue
		}
		c := peer
		switch b.name {
		case "raw":
			c = raw
		case "herald", "herald-redis":
			c = herald
		}
		x1 := left + int(b.median*scale)
		fill(img, image.Rect(left, y+4, max(x1, left+1), y+rowH-4), c)
		if b.n > 1 && b.max > b.min {
			a, z := left+int(b.min*scale), left+int(b.max*scale)
			mid := y + rowH/2
			fill(img, image.Rect(a, mid, z+1, mid+1), ink)
			fill(img, image.Rect(a, mid-3, a+1, mid+4), ink)
			fill(img, image.Rect(z, mid-3, z+1, mid+4), ink)
		}
		text(img, max(x1, left+int(b.max*scale))+5, y+14, format(b.median)+" "+unit, ink)
	}
	return scale2(img)
}

func format(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}

// ascii replaces what basicfont cannot draw.
var ascii = strings.NewReplacer("µ", "u", "→", "->", "≤", "<=", "×", "x", "–", "-")

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	s = ascii.Replace(s)
	d := font.Drawer{Dst: img, Src: &image.Uniform{c}, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func scale2(src *image.RGBA) *image.RGBA {
	b := src.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, 2*b.Dx(), 2*b.Dy()))
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			c := src.RGBAAt(x, y)
			dst.SetRGBA(2*x, 2*y, c)
			dst.SetRGBA(2*x+1, 2*y, c)
			dst.SetRGBA(2*x, 2*y+1, c)
			dst.SetRGBA(2*x+1, 2*y+1, c)
		}
	}
	return dst
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
