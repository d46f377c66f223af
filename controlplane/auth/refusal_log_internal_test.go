package auth

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/fairway-lb/fairway/internal/testkit"
)

// A refused stream is logged at warn level once per reason each
// refusalLogEvery, the ones in between at debug level with a count carried
// by the next warn line, so a fleet of misconfigured clients is visible
// without an attacker flooding the log.
func TestDeny_WarnsOncePerReasonEachInterval(t *testing.T) {
	var logs testkit.LogBuffer
	clk := testingclock.NewFakeClock(time.Unix(1000, 0))
	a, err := New(Mode{MTLS: true}, WithClock(clk), WithRegisterer(prometheus.NewRegistry()),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	deny := func(reason string) {
		_ = a.deny(context.Background(), MethodToken, &denial{reason, "the token was rejected"})
	}
	warns := func() int { return strings.Count(logs.String(), "level=WARN") }

	deny("invalid_token")
	deny("invalid_token")
	deny("audience")
	if got := warns(); got != 2 {
		t.Fatalf("after two reasons: %d warn lines, want 2 (one per reason):\n%s", got, logs.String())
	}
	clk.Step(refusalLogEvery)
	deny("invalid_token")
	if got := warns(); got != 3 {
		t.Fatalf("after the interval: %d warn lines, want 3:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "refused_since_last_warn=1") {
		t.Errorf("the third warn line does not count the refusal held back:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `error="fairway/auth: the token was rejected"`) {
		t.Errorf("the warn lines do not say why:\n%s", logs.String())
	}
}
