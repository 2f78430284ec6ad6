package azure

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	rpc "github.com/polyfn/polyfn/api/azure"
)

// This file holds the timer trigger of app functions (timerTrigger), as the
// official host and its timer extension run it (Azure/azure-webjobs-sdk-extensions,
// src/WebJobs.Extensions/Extensions/Timers: TimerSchedule.Create,
// CronSchedule, ConstantSchedule, TimerListener, TimerInfo, ScheduleStatus;
// the binding data of TimerTriggerBinding and the "sys" binding data of
// Azure/azure-webjobs-sdk's SystemBindingData; the JSON serialisation of
// GrpcMessageConversionExtensions.ToRpcDefault in Azure/azure-functions-host).

// TimeZoneSetting is the app setting that names the time zone schedules are
// read in (an IANA name such as "Europe/Paris"); without it, the host's
// local time zone, as the official host does.
const TimeZoneSetting = "WEBSITE_TIME_ZONE"

// MinTimeSpan is the shortest TimeSpan schedule polyfn runs.
const MinTimeSpan = 100 * time.Millisecond

// TimerTrigger describes a function's timerTrigger binding.
type TimerTrigger struct {
	// BindingName is the trigger binding's name: the input's name on an
	// invocation ("myTimer", "timerTrigger7f3c...").
	BindingName string
	// Schedule is the schedule as declared, "%Setting%" references
	// unresolved.
	Schedule string
	// RunOnStartup: the function also runs when its timer starts.
	RunOnStartup bool
	// UseMonitor is the binding's useMonitor (true when not declared).
	UseMonitor bool
}

// TimerTriggerOf returns fn's timerTrigger binding, or nil when its
// trigger is another. Errors name the function and the binding.
func TimerTriggerOf(fn *Function) (*TimerTrigger, error) {
	t := fn.Trigger()
	if t == nil || !strings.EqualFold(t.Type, "timerTrigger") {
		return nil, nil
	}
	fail := func(err error) (*TimerTrigger, error) {
		return nil, fmt.Errorf("function %q: binding %q: %w", fn.Name, t.Name, err)
	}
	tt := &TimerTrigger{BindingName: t.Name, UseMonitor: true}
	s, err := stringField(t.Raw, "schedule")
	if err != nil {
		return fail(err)
	}
	if tt.Schedule = strings.TrimSpace(s); tt.Schedule == "" {
		return fail(errors.New(`missing "schedule"`))
	}
	if tt.RunOnStartup, err = boolField(t.Raw, "runOnStartup", false); err != nil {
		return fail(err)
	}
	if tt.UseMonitor, err = boolField(t.Raw, "useMonitor", true); err != nil {
		return fail(err)
	}
	return tt, nil
}

// boolField returns obj[key] as a boolean (true, false, or the strings
// "true" and "false" in any case); def when absent or null.
func boolField(obj map[string]any, key string, def bool) (bool, error) {
	v, ok := lookup(obj, key)
	if !ok || v == nil {
		return def, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		if p, err := strconv.ParseBool(strings.TrimSpace(b)); err == nil {
			return p, nil
		}
	}
	return false, fmt.Errorf("%q must be true or false, not %v", key, v)
}

// TimerSchedule is a resolved, parsed timer schedule of an app function.
type TimerSchedule struct {
	// Declared is the schedule as the binding declares it; Resolved, with
	// its "%Setting%" references replaced.
	Declared, Resolved string
	cron               *cron.SpecSchedule
	every              time.Duration
	loc                *time.Location
	// Monitored: the timer info carries ScheduleStatus (see TimerInfo).
	Monitored bool
}

// ResolveTimer reads the schedule of tt, a timer trigger of function fn:
// "%Name%" references are replaced by the app settings of that name (see
// ResolveSettings), then the schedule is parsed (ParseTimerSchedule) in the
// time zone the app's WEBSITE_TIME_ZONE setting names, else in the local
// one. Errors name the function and the binding.
func ResolveTimer(fn string, tt *TimerTrigger, settings map[string]string) (*TimerSchedule, error) {
	fail := func(err error) (*TimerSchedule, error) {
		return nil, fmt.Errorf("function %q: binding %q: schedule %q: %w", fn, tt.BindingName, tt.Schedule, err)
	}
	resolved, err := ResolveSettings(tt.Schedule, settings)
	if err != nil {
		return fail(err)
	}
	loc := time.Local
	if name, ok := setting(settings, TimeZoneSetting); ok && strings.TrimSpace(name) != "" {
		if loc, err = time.LoadLocation(strings.TrimSpace(name)); err != nil {
			return fail(fmt.Errorf("app setting %s: unknown time zone %q (use an IANA name such as Europe/Paris)", TimeZoneSetting, name))
		}
	}
	s, err := ParseTimerSchedule(resolved, loc)
	if err != nil {
		if resolved != tt.Schedule {
			err = fmt.Errorf("resolved to %q: %w", resolved, err)
		}
		return fail(err)
	}
	s.Declared = tt.Schedule
	s.Monitored = tt.UseMonitor && !s.subMinute(time.Now())
	return s, nil
}

// ResolveSettings replaces each "%Name%" of s by the value of app setting
// Name, as the official host's INameResolver.ResolveWholeString does: a
// '%' without its closing '%', or a setting that is not set, is an error.
// Names are matched exactly, then without regard to case (the official
// host reads them from a case-insensitive configuration).
func ResolveSettings(s string, settings map[string]string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		start := strings.IndexByte(s[i:], '%')
		if start < 0 {
			b.WriteString(s[i:])
			break
		}
		start += i
		end := strings.IndexByte(s[start+1:], '%')
		if end < 0 {
			return "", fmt.Errorf("the '%%' at position %d has no closing '%%'", start)
		}
		end += start + 1
		name := s[start+1 : end]
		v, ok := setting(settings, name)
		if !ok {
			return "", fmt.Errorf("app setting %q is not set (set it in the app entry's env or its runtime's)", name)
		}
		b.WriteString(s[i:start])
		b.WriteString(v)
		i = end + 1
	}
	return b.String(), nil
}

func setting(settings map[string]string, name string) (string, bool) {
	if v, ok := settings[name]; ok {
		return v, true
	}
	for k, v := range settings {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// NCRONTAB parsers: six fields with seconds first, or five (minute first),
// as the official host's CronSchedule decides by the number of fields.
var (
	ncrontab6 = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	ncrontab5 = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
)

// timeSpan is .NET's TimeSpan text the official host accepts for a
// constant schedule: [d.]hh:mm[:ss[.fffffff]].
var timeSpan = regexp.MustCompile(`^(?:(\d+)\.)?(\d+):(\d+)(?::(\d+)(?:\.(\d{1,7}))?)?$`)

// ParseTimerSchedule parses an app function's resolved schedule, in loc:
//
//   - an NCRONTAB expression: six fields, "{second} {minute} {hour} {day}
//     {month} {day-of-week}" ("*/5 * * * * *", "0 30 9 * * Mon-Fri"), or
//     five without the seconds; numbers, ranges, lists, steps and the
//     English names of months and days. A day must match both the
//     day-of-month and the day-of-week fields (NCrontab's rule; classic cron
//     takes either when both are restricted). "?", "L", "W", "#" and
//     descriptors such as "@daily" are not NCRONTAB and are refused.
//     NCRONTAB has no time zone prefix: see ResolveTimer.
//   - a TimeSpan, "hh:mm:ss" (hh below 24), "d.hh:mm:ss" or "hh:mm": a
//     constant interval. Its ticks fall on the multiples of the interval
//     since the Unix epoch, as polyfn's @every (the official host counts
//     from the start of the host); at least MinTimeSpan.
func ParseTimerSchedule(spec string, loc *time.Location) (*TimerSchedule, error) {
	s := strings.TrimSpace(spec)
	ts := &TimerSchedule{Resolved: spec, loc: loc}
	if m := timeSpan.FindStringSubmatch(s); m != nil {
		d, err := parseTimeSpan(m)
		if err != nil {
			return nil, err
		}
		ts.every = d
		return ts, nil
	}
	fields := strings.Fields(s)
	var p cron.Parser
	switch len(fields) {
	case 6:
		p = ncrontab6
	case 5:
		p = ncrontab5
	default:
		return nil, fmt.Errorf("not an NCRONTAB expression (six fields, seconds first, such as \"0 */5 * * * *\") nor a TimeSpan (hh:mm:ss): it has %d fields", len(fields))
	}
	if i := strings.IndexAny(s, "?@"); i >= 0 {
		return nil, fmt.Errorf("%q is not NCRONTAB syntax", s[i:i+1])
	}
	sched, err := parseSpec(p, s)
	if err != nil {
		return nil, err
	}
	spec6, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("not an NCRONTAB expression")
	}
	// NCrontab takes a day when both day fields match: the parser's
	// star bit on the day-of-month makes it do the same.
	spec6.Dom |= 1 << 63
	spec6.Location = loc
	ts.cron = spec6
	if ts.Next(time.Now()).IsZero() {
		return nil, errors.New("no date matches it")
	}
	return ts, nil
}

func parseSpec(p cron.Parser, s string) (sched cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("cannot parse it: %v", r)
		}
	}()
	return p.Parse(s)
}

func parseTimeSpan(m []string) (time.Duration, error) {
	num := func(s string) int64 {
		if s == "" {
			return 0
		}
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	days, h, min, sec := num(m[1]), num(m[2]), num(m[3]), num(m[4])
	if h > 23 {
		return 0, fmt.Errorf("TimeSpan hours %d out of range 0-23 (for days write d.hh:mm:ss, such as 1.00:00:00)", h)
	}
	if min > 59 || sec > 59 {
		return 0, errors.New("TimeSpan minutes and seconds must be 0-59")
	}
	if days > 10000 {
		return 0, errors.New("TimeSpan days out of range")
	}
	frac := time.Duration(0)
	if f := m[5]; f != "" {
		n, _ := strconv.ParseInt((f + "000000")[:7], 10, 64)
		frac = time.Duration(n) * 100 // ticks of 100ns
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(min)*time.Minute + time.Duration(sec)*time.Second + frac
	if d < MinTimeSpan {
		return 0, fmt.Errorf("TimeSpan %s is shorter than the minimum, %s", d, MinTimeSpan)
	}
	return d, nil
}

// Next returns the first tick strictly after t, or the zero time when
// there is none.
func (s *TimerSchedule) Next(t time.Time) time.Time {
	if s.cron != nil {
		return s.cron.Next(t)
	}
	ns, d := t.UnixNano(), int64(s.every)
	n := ns / d
	if ns < 0 && ns%d != 0 {
		n--
	}
	return time.Unix(0, (n+1)*d).In(t.Location())
}

// Location is the time zone the schedule is read in.
func (s *TimerSchedule) Location() *time.Location { return s.loc }

// String is the resolved schedule.
func (s *TimerSchedule) String() string { return s.Resolved }

// subMinute reports whether the schedule ticks more than once a minute, the
// official host's ShouldDisableScheduleMonitor (a cron expression whose
// fields from the minute on take every value and that fires twice within
// the next minute; a TimeSpan under a minute).
func (s *TimerSchedule) subMinute(now time.Time) bool {
	if s.cron == nil {
		return s.every < time.Minute
	}
	// NCrontab writes a field that holds every value as "*": compare the
	// values, not the text ("*/1" is "*").
	full := func(bits uint64, lo, hi uint) bool {
		for i := lo; i <= hi; i++ {
			if bits&(1<<i) == 0 {
				return false
			}
		}
		return true
	}
	c := s.cron
	if !full(c.Minute, 0, 59) || !full(c.Hour, 0, 23) || !full(c.Dom, 1, 31) || !full(c.Month, 1, 12) || !full(c.Dow, 0, 6) {
		return false
	}
	first := s.Next(now)
	return !first.IsZero() && s.Next(first).Before(now.Add(time.Minute))
}

// TimerTick is what the timer info of one invocation says.
type TimerTick struct {
	// Scheduled is the occurrence the invocation runs for (the moment it
	// started, for a run on startup).
	Scheduled time.Time
	// Last is the previous occurrence run, zero when none.
	Last time.Time
	// Startup: the run on startup (runOnStartup), before the first tick.
	Startup bool
}

// TimerInfo returns the timer trigger's input, the JSON the official host
// sends (Newtonsoft's serialisation of its TimerInfo):
//
//	{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"...","Next":"...","LastUpdated":"..."},"IsPastDue":false}
//
// AdjustForDST is true for NCRONTAB schedules and false for TimeSpans.
// ScheduleStatus is null when the schedule is not monitored (useMonitor
// false, or it ticks more than once a minute), as in the official host;
// else Last is the previous occurrence run (0001-01-01T00:00:00+00:00 before
// the first), Next the occurrence this invocation runs for (the next one,
// for a run on startup), LastUpdated equal to Last. The times are local
// times of the schedule's time zone with their offset, as .NET writes a
// local DateTime. IsPastDue is always false: polyfn keeps no schedule
// status across restarts and replays no missed occurrence.
func (s *TimerSchedule) TimerInfo(t TimerTick) []byte {
	type status struct {
		Last, Next, LastUpdated string
	}
	info := struct {
		Schedule struct {
			AdjustForDST bool
		}
		ScheduleStatus *status
		IsPastDue      bool
	}{}
	info.Schedule.AdjustForDST = s.cron != nil
	if s.Monitored {
		next := t.Scheduled
		if t.Startup {
			next = s.Next(t.Scheduled)
		}
		last := dotnetLocal(t.Last, s.loc)
		info.ScheduleStatus = &status{Last: last, Next: dotnetLocal(next, s.loc), LastUpdated: last}
	}
	b, _ := json.Marshal(info)
	return b
}

// dotnetLocal writes t as Newtonsoft writes a local DateTime: ISO 8601 with
// up to seven fractional digits and the offset ("+00:00", never "Z").
func dotnetLocal(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00+00:00"
	}
	return t.In(loc).Format("2006-01-02T15:04:05.9999999-07:00")
}

// TimerInput returns the input_data and trigger_metadata of an
// InvocationRequest for the timer-triggered function fn (whose trigger
// binding is named binding): input_data has one binding, the trigger
// binding's name with info (TimerInfo) as json. trigger_metadata is the
// official host's binding data: "TimerTrigger", the time of the invocation
// as .NET's invariant culture writes a local DateTime ("12/03/2026
// 14:05:00"), and "sys" ({"MethodName","UtcNow","RandGuid"}, json).
func TimerInput(fn, binding string, info []byte, now time.Time, loc *time.Location) ([]*rpc.ParameterBinding, map[string]*rpc.TypedData) {
	input := []*rpc.ParameterBinding{{Name: binding, RpcData: &rpc.ParameterBinding_Data{Data: jsonData(string(info))}}}
	sys := mustJSON(struct {
		MethodName string
		UtcNow     string
		RandGuid   string
	}{fn, now.UTC().Format("2006-01-02T15:04:05.9999999Z07:00"), NewID()})
	if loc == nil {
		loc = time.Local
	}
	md := map[string]*rpc.TypedData{
		"TimerTrigger": stringData(now.In(loc).Format("01/02/2006 15:04:05")),
		"sys":          jsonData(sys),
	}
	return input, md
}
