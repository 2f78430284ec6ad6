package timer

import (
	"strings"
	"testing"
	"time"
)

func TestParseAndNext(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	// A Tuesday. The cron schedules name their zone: without one they run
	// in local time (TestParseLocalTimeByDefault).
	from := time.Date(2026, 3, 10, 8, 59, 59, 500_000_000, time.UTC)
	tests := []struct {
		spec string
		want []time.Time // the ticks after from, in order
	}{
		{"CRON_TZ=UTC */5 * * * *", []time.Time{time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC), time.Date(2026, 3, 10, 9, 5, 0, 0, time.UTC)}},
		{"CRON_TZ=UTC */20 * * * * *", []time.Time{time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC), time.Date(2026, 3, 10, 9, 0, 20, 0, time.UTC)}},
		{"CRON_TZ=UTC @hourly", []time.Time{time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC), time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)}},
		{"@every 1m30s", []time.Time{time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC), time.Date(2026, 3, 10, 9, 1, 30, 0, time.UTC)}},
		{"@every 200ms", []time.Time{time.Date(2026, 3, 10, 8, 59, 59, 600_000_000, time.UTC), time.Date(2026, 3, 10, 8, 59, 59, 800_000_000, time.UTC)}},
		{"  CRON_TZ=Europe/Paris   0 9 * * 1-5 ", []time.Time{time.Date(2026, 3, 11, 9, 0, 0, 0, paris), time.Date(2026, 3, 12, 9, 0, 0, 0, paris)}},
		{"TZ=UTC 0 9 * * *", []time.Time{time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC), time.Date(2026, 3, 11, 9, 0, 0, 0, time.UTC)}},
	}
	for _, tt := range tests {
		s, err := Parse(tt.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.spec, err)
			continue
		}
		at := from
		for i, want := range tt.want {
			at = s.Next(at)
			if !at.Equal(want) {
				t.Errorf("%q: tick %d = %v, want %v", tt.spec, i, at, want)
				break
			}
		}
	}
}

func TestParseLocalTimeByDefault(t *testing.T) {
	s, err := Parse("0 9 * * *")
	if err != nil {
		t.Fatal(err)
	}
	next := s.Next(time.Now())
	if next.Location() != time.Local || next.Hour() != 9 || next.Minute() != 0 {
		t.Fatalf("next = %v, want 09:00 local time", next)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"every 5 minutes", "expected 5 to 6 fields"},
		{"* * *", "expected 5 to 6 fields, found 3"},
		{"61 * * * *", "above maximum"},
		{"*/0 * * * * *", "step"},
		{"@fortnightly", "unrecognized descriptor"},
		{"@every", "@every needs a duration"},
		{"@every 5", `invalid duration "5"`},
		{"@every -1s", "shorter than the minimum"},
		{"@every 10ms", "shorter than the minimum, 100ms"},
		{"CRON_TZ=Mars/Olympus_Mons 0 * * * *", `unknown time zone "Mars/Olympus_Mons"`},
		{"CRON_TZ=UTC", "no schedule after CRON_TZ=UTC"},
		{"CRON_TZ= 0 * * * *", "names no time zone"},
		{"0 0 30 2 *", "no date matches it"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.spec, err, tt.want)
		}
	}
}

func TestEveryIsOnTheEpochGrid(t *testing.T) {
	s, err := Parse("@every 7s")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	for range 5 {
		next := s.Next(at)
		if next.UnixNano()%int64(7*time.Second) != 0 || !next.After(at) || next.Sub(at) > 7*time.Second {
			t.Fatalf("Next(%v) = %v: not the next multiple of 7s since the epoch", at, next)
		}
		at = next
	}
	// A time on the grid is not its own next tick.
	if next := s.Next(at); next.Sub(at) != 7*time.Second {
		t.Fatalf("Next(%v) = %v, want 7s later", at, next)
	}
}
