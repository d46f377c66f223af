package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a one-line progress bar with \r updates. Called from the
// run's goroutine only. A disabled progress writes nothing.
type progress struct {
	w        io.Writer
	on       bool
	scenario string
	n, i     int
	name     string
	total    int
	drawn    bool
}

func newProgress(w io.Writer, on bool, scenario string, n int) *progress {
	return &progress{w: w, on: on, scenario: scenario, n: n}
}

func (p *progress) phase(i int, name string, total int) {
	p.i, p.name, p.total = i, name, total
	p.update(0, 0, 1)
}

func (p *progress) update(issued int, elapsed, run time.Duration) {
	if !p.on {
		return
	}
	const width = 30
	frac := 0.0
	if run > 0 {
		frac = min(float64(elapsed)/float64(run), 1)
	}
	fill := int(frac * width)
	fmt.Fprintf(p.w, "\r%s [%d/%d %-18s] [%s%s] %3.0f%% %d req ", p.scenario, p.i+1, p.n, p.name,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), 100*frac, issued)
	p.drawn = true
}

func (p *progress) finish() {
	if p.on && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
