package timer

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/robfig/cron/v3"
)

// MinEvery is the shortest interval @every accepts.
const MinEvery = 100 * time.Millisecond

// Schedule computes the ticks of a timer.
type Schedule interface {
	// Next returns the first tick strictly after t, or the zero time when
	// there is none.
	Next(t time.Time) time.Time
}

// cronParser reads cron expressions of five fields (minute first) or six
// (second first), and the descriptors @yearly, @monthly, @weekly, @daily,
// @midnight and @hourly.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse reads a timer schedule:
//
//   - a cron expression, "*/5 * * * *" (minute hour day-of-month month
//     day-of-week) or with a leading seconds field, "*/10 * * * * *";
//   - a descriptor: @yearly, @monthly, @weekly, @daily, @midnight, @hourly;
//   - @every DURATION (a Go duration of at least MinEvery), ticking at every
//     multiple of DURATION since the Unix epoch.
//
// Cron expressions and descriptors run in local time unless the schedule
// starts with CRON_TZ=ZONE (or TZ=ZONE), such as "CRON_TZ=Europe/Paris 0 9 * * 1-5".
func Parse(spec string) (Schedule, error) {
	s := strings.TrimSpace(spec)
	loc := time.Local
	for _, prefix := range []string{"CRON_TZ=", "TZ="} {
		rest, ok := strings.CutPrefix(s, prefix)
		if !ok {
			continue
		}
		name := rest
		if i := strings.IndexFunc(rest, unicode.IsSpace); i >= 0 {
			name, rest = rest[:i], strings.TrimSpace(rest[i:])
		} else {
			rest = ""
		}
		if name == "" {
			return nil, fmt.Errorf("%s names no time zone", prefix)
		}
		l, err := time.LoadLocation(name)
		if err != nil {
			return nil, fmt.Errorf("unknown time zone %q", name)
		}
		if rest == "" {
			return nil, fmt.Errorf("no schedule after %s%s", prefix, name)
		}
		loc, s = l, rest
		break
	}
	if d, ok := strings.CutPrefix(s, "@every"); ok {
		return parseEvery(strings.TrimSpace(d))
	}
	sched, err := parseCron(s)
	if err != nil {
		return nil, err
	}
	if spec, ok := sched.(*cron.SpecSchedule); ok {
		spec.Location = loc
	}
	// A date that never comes ("0 0 30 2 *"): the parser's Next gives up
	// after five years and returns the zero time.
	if sched.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("no date matches it")
	}
	return sched, nil
}

// parseCron is the cron parser, with any panic on odd input reported as an
// error.
func parseCron(s string) (sched cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("cannot parse it: %v", r)
		}
	}()
	return cronParser.Parse(s)
}

func parseEvery(text string) (Schedule, error) {
	if text == "" {
		return nil, fmt.Errorf("@every needs a duration, such as @every 10s")
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return nil, fmt.Errorf("@every: invalid duration %q (want a Go duration such as 30s or 5m)", text)
	}
	if d < MinEvery {
		return nil, fmt.Errorf("@every %s is shorter than the minimum, %s", text, MinEvery)
	}
	return every{d}, nil
}

// every ticks at each multiple of d since the Unix epoch, so its ticks do
// not move when the host restarts or reloads: @every 10s ticks at :00, :10,
// :20 … of each minute, @every 1h at the start of each hour (UTC).
type every struct{ d time.Duration }

func (e every) Next(t time.Time) time.Time {
	ns, d := t.UnixNano(), int64(e.d)
	n := ns / d
	if ns < 0 && ns%d != 0 {
		n-- // floor, for times before 1970
	}
	return time.Unix(0, (n+1)*d).In(t.Location())
}

func (e every) String() string { return "@every " + e.d.String() }
