package azure

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	rpc "github.com/polyfn/polyfn/api/azure"
)

func timerFunction(t *testing.T, name string, bindings ...string) *Function {
	t.Helper()
	md := &rpc.RpcFunctionMetadata{Name: name, FunctionId: name, RawBindings: bindings}
	fn, err := FromWorkerMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	return fn
}

// TestTimerTriggerOf reads the timerTrigger binding as the Node.js v4
// library, the Python v2 library and function.json write it.
func TestTimerTriggerOf(t *testing.T) {
	for _, c := range []struct {
		raw     string
		want    TimerTrigger
		wantErr string
	}{
		{raw: `{"type":"timerTrigger","name":"timerTrigger1a2b","direction":"in","schedule":"*/2 * * * * *","runOnStartup":true}`,
			want: TimerTrigger{BindingName: "timerTrigger1a2b", Schedule: "*/2 * * * * *", RunOnStartup: true, UseMonitor: true}},
		{raw: `{"type":"timerTrigger","direction":"IN","name":"myTimer","schedule":"0 */5 * * * *","runOnStartup":false,"useMonitor":false}`,
			want: TimerTrigger{BindingName: "myTimer", Schedule: "0 */5 * * * *", UseMonitor: false}},
		{raw: `{"type":"TimerTrigger","name":"t","schedule":"%S%","runOnStartup":"True"}`,
			want: TimerTrigger{BindingName: "t", Schedule: "%S%", RunOnStartup: true, UseMonitor: true}},
		{raw: `{"type":"timerTrigger","name":"myTimer"}`, wantErr: `function "tick": binding "myTimer": missing "schedule"`},
		{raw: `{"type":"timerTrigger","name":"myTimer","schedule":5}`, wantErr: `function "tick": binding "myTimer": "schedule" must be a string, not a number`},
		{raw: `{"type":"timerTrigger","name":"myTimer","schedule":"0 * * * * *","runOnStartup":"yes"}`, wantErr: `function "tick": binding "myTimer": "runOnStartup" must be true or false, not yes`},
	} {
		tt, err := TimerTriggerOf(timerFunction(t, "tick", c.raw))
		if c.wantErr != "" {
			if err == nil || err.Error() != c.wantErr {
				t.Errorf("%s: got %v, want error %q", c.raw, err, c.wantErr)
			}
			continue
		}
		if err != nil || tt == nil || *tt != c.want {
			t.Errorf("%s: got %+v, %v; want %+v", c.raw, tt, err, c.want)
		}
	}
	http := timerFunction(t, "h", `{"type":"httpTrigger","name":"req"}`)
	if tt, err := TimerTriggerOf(http); tt != nil || err != nil {
		t.Errorf("an HTTP function has a timer trigger: %+v, %v", tt, err)
	}
}

// TestNCRONTAB checks the schedules' ticks: six fields with seconds first,
// five without, both day fields must match (NCrontab, unlike classic
// cron), names, and TimeSpans.
func TestNCRONTAB(t *testing.T) {
	utc := time.UTC
	base := time.Date(2026, 12, 3, 14, 5, 7, 0, utc) // a Thursday
	for _, c := range []struct {
		spec string
		want []string
	}{
		{"*/5 * * * * *", []string{"2026-12-03T14:05:10Z", "2026-12-03T14:05:15Z"}},
		{"0 */5 * * * *", []string{"2026-12-03T14:10:00Z", "2026-12-03T14:15:00Z"}},
		{"*/15 * * * *", []string{"2026-12-03T14:15:00Z", "2026-12-03T14:30:00Z"}},
		{"0 30 9 * * Mon-Fri", []string{"2026-12-04T09:30:00Z", "2026-12-07T09:30:00Z"}},
		// Friday the 13th: both fields, not either.
		{"0 0 0 13 * 5", []string{"2027-08-13T00:00:00Z", "2028-10-13T00:00:00Z"}},
		{"0 0 0 1 Jan *", []string{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"}},
		{"00:00:30", []string{"2026-12-03T14:05:30Z", "2026-12-03T14:06:00Z"}},
		{"01:00:00", []string{"2026-12-03T15:00:00Z", "2026-12-03T16:00:00Z"}},
		{"1.00:00:00", []string{"2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z"}},
	} {
		s, err := ParseTimerSchedule(c.spec, utc)
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		at := base
		for _, w := range c.want {
			at = s.Next(at)
			if got := at.Format(time.RFC3339); got != w {
				t.Errorf("%q: got tick %s, want %s", c.spec, got, w)
				break
			}
		}
	}
	for spec, want := range map[string]string{
		"every 5 minutes":   "not an NCRONTAB expression (six fields, seconds first, such as \"0 */5 * * * *\") nor a TimeSpan (hh:mm:ss): it has 3 fields",
		"@daily":            "it has 1 fields",
		"0 0 * * * ?":       `"?" is not NCRONTAB syntax`,
		"0 0 0 30 2 *":      "no date matches it",
		"61 * * * * *":      "end of range (61) above maximum (59): 61",
		"24:00:00":          "TimeSpan hours 24 out of range 0-23 (for days write d.hh:mm:ss, such as 1.00:00:00)",
		"00:00:00":          "TimeSpan 0s is shorter than the minimum, 100ms",
		"0 0 0 1 Foo *":     "failed to parse int from Foo",
		"* * * * * * *":     "it has 7 fields",
		"00:00:00.05":       "shorter than the minimum",
		"0 0 0 * * 0#2":     "",
		"CRON_TZ=UTC * * *": "",
	} {
		_, err := ParseTimerSchedule(spec, utc)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", spec, err, want)
		}
	}
}

// TestResolveTimer resolves %Setting% references from the app's settings
// and names function, binding and schedule in every error.
func TestResolveTimer(t *testing.T) {
	settings := map[string]string{"TICK_SCHEDULE": "*/2 * * * * *", "Minute": "0", "BAD": "often"}
	tt := func(s string) *TimerTrigger {
		return &TimerTrigger{BindingName: "myTimer", Schedule: s, UseMonitor: true}
	}
	s, err := ResolveTimer("tick", tt("%TICK_SCHEDULE%"), settings)
	if err != nil || s.Resolved != "*/2 * * * * *" || s.Declared != "%TICK_SCHEDULE%" {
		t.Fatalf("got %+v, %v", s, err)
	}
	if s.Monitored {
		t.Errorf("an every-2-seconds schedule is monitored; the official host turns its monitor off")
	}
	for spec, monitored := range map[string]bool{"*/5 */1 * * * *": false, "0 * * * * *": true, "*/5 * * * *": true, "*/5 * * * * Mon": true, "00:00:59": false, "00:01:00": true} {
		if s, err := ResolveTimer("tick", tt(spec), settings); err != nil || s.Monitored != monitored {
			t.Errorf("%q: monitored %v (%v), want %v", spec, s != nil && s.Monitored, err, monitored)
		}
	}
	s, err = ResolveTimer("tick", tt("%minute% */5 * * * *"), settings)
	if err != nil || s.Resolved != "0 */5 * * * *" || !s.Monitored {
		t.Errorf("case-insensitive name inside an expression: got %+v, %v", s, err)
	}
	for spec, want := range map[string]string{
		"%NOPE%":          `function "tick": binding "myTimer": schedule "%NOPE%": app setting "NOPE" is not set (set it in the app entry's env or its runtime's)`,
		"0 %Minute * * *": `function "tick": binding "myTimer": schedule "0 %Minute * * *": the '%' at position 2 has no closing '%'`,
		"%BAD%":           `function "tick": binding "myTimer": schedule "%BAD%": resolved to "often": not an NCRONTAB expression`,
	} {
		_, err := ResolveTimer("tick", tt(spec), settings)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", spec, err, want)
		}
	}
	settings[TimeZoneSetting] = "Europe/Paris"
	s, err = ResolveTimer("tick", tt("0 0 9 * * *"), settings)
	if err != nil || s.Next(time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)).UTC().Hour() != 8 {
		t.Errorf("9:00 in Paris is 8:00 UTC in December: %+v, %v", s, err)
	}
	settings[TimeZoneSetting] = "Mars/Olympus"
	if _, err := ResolveTimer("tick", tt("0 0 9 * * *"), settings); err == nil || !strings.Contains(err.Error(), `WEBSITE_TIME_ZONE: unknown time zone "Mars/Olympus"`) {
		t.Errorf("unknown time zone: %v", err)
	}
}

// TestTimerInfo checks the timer info's JSON against the official host's
// serialisation, with and without schedule status.
func TestTimerInfo(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	s, err := ParseTimerSchedule("0 */5 * * * *", paris)
	if err != nil {
		t.Fatal(err)
	}
	s.Monitored = true
	at := time.Date(2026, 12, 3, 14, 10, 0, 0, time.UTC)
	got := string(s.TimerInfo(TimerTick{Scheduled: at, Last: at.Add(-5 * time.Minute)}))
	want := `{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2026-12-03T15:05:00+01:00","Next":"2026-12-03T15:10:00+01:00","LastUpdated":"2026-12-03T15:05:00+01:00"},"IsPastDue":false}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	got = string(s.TimerInfo(TimerTick{Scheduled: at.Add(1500 * time.Millisecond), Startup: true}))
	want = `{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00+00:00","Next":"2026-12-03T15:15:00+01:00","LastUpdated":"0001-01-01T00:00:00+00:00"},"IsPastDue":false}`
	if got != want {
		t.Errorf("run on startup: got  %s\nwant %s", got, want)
	}
	c, _ := ParseTimerSchedule("00:00:10", time.UTC)
	if got, want := string(c.TimerInfo(TimerTick{Scheduled: at})), `{"Schedule":{"AdjustForDST":false},"ScheduleStatus":null,"IsPastDue":false}`; got != want {
		t.Errorf("unmonitored TimeSpan: got %s, want %s", got, want)
	}

	in, md := TimerInput("tick", "myTimer", []byte(want), at, time.UTC)
	if len(in) != 1 || in[0].Name != "myTimer" || in[0].GetData().GetJson() != want {
		t.Errorf("input data: %v", in)
	}
	if md["TimerTrigger"].GetString_() != "12/03/2026 14:10:00" {
		t.Errorf("TimerTrigger metadata: %v", md["TimerTrigger"])
	}
	var sys struct{ MethodName, UtcNow, RandGuid string }
	if err := json.Unmarshal([]byte(md["sys"].GetJson()), &sys); err != nil || sys.MethodName != "tick" || sys.UtcNow != "2026-12-03T14:10:00Z" || len(sys.RandGuid) != 36 {
		t.Errorf("sys metadata: %s (%v)", md["sys"].GetJson(), err)
	}
}
