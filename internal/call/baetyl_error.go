package call

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// baetylErrorPrefix starts the gRPC status message of a call whose handler
// raised in a Python gRPC server (grpc's own wording); what follows is
// str() of the exception the servicer raised.
const baetylErrorPrefix = "Exception calling application: "

// parseBaetylError reads the error the original Baetyl Python runtime sends
// for a function's exception. The runtime raises
// Exception("[UserCodeInvoke] ", err), whose str() is the repr of a tuple:
//
//	Exception calling application: ('[UserCodeInvoke] ', ValueError('bad input', 2))
//
// It returns the exception's type and its message as Python's str(err)
// gives it ("('bad input', 2)" here; "bad input" for ValueError('bad
// input')). ok is false when msg is not in that format; parsed is false
// when it is (the function raised) but the exception's repr could not be
// read: the caller then keeps the raw message.
func parseBaetylError(msg string) (typ, message string, ok, parsed bool) {
	rest, found := strings.CutPrefix(msg, baetylErrorPrefix)
	if !found {
		// Other Python servers: the tuple without grpc's wording.
		rest = msg
	}
	if !strings.HasPrefix(rest, "('[UserCode") && !strings.HasPrefix(rest, `("[UserCode`) {
		return "", "", false, false
	}
	p := &pyParser{s: rest}
	v, err := p.value()
	if err != nil || p.i != len(p.s) || v.kind != pyTuple || len(v.items) != 2 ||
		v.items[0].kind != pyString || !strings.HasPrefix(v.items[0].str, "[UserCode") || v.items[1].kind != pyCall {
		return "", "", true, false
	}
	exc := v.items[1]
	return exc.name, exceptionStr(exc), true, true
}

// exceptionStr is str() of an exception whose repr was read as call, as
// the builtin exception classes give it: BaseException's (no argument: "";
// one: str() of it; more: the repr of the argument tuple), KeyError's (the
// repr of its key) and OSError's ("[Errno 2] No such file or directory"; the
// file name is not in the repr). A class's own __str__ is not seen.
func exceptionStr(call pyValue) string {
	args := call.items
	switch {
	case len(args) == 0:
		return ""
	case len(args) == 1 && call.name == "KeyError":
		return args[0].raw
	case len(args) == 1 && args[0].kind == pyString:
		return args[0].str
	case len(args) == 1 && args[0].kind == pyCall && exceptionLike(args[0].name):
		return exceptionStr(args[0]) // raise RuntimeError(err)
	case len(args) == 1:
		return args[0].raw
	case len(args) == 2 && osErrors[call.name] && args[1].kind == pyString && isInt(args[0].raw):
		return "[Errno " + args[0].raw + "] " + args[1].str
	}
	// Name(a, b) is the name followed by repr((a, b)), which is str((a, b)).
	return strings.TrimLeft(call.raw[len(call.name):], " ")
}

// osErrors are OSError and its builtin subclasses, whose str() of (errno,
// strerror) is "[Errno errno] strerror".
var osErrors = map[string]bool{
	"OSError": true, "IOError": true, "EnvironmentError": true, "BlockingIOError": true, "ChildProcessError": true,
	"ConnectionError": true, "BrokenPipeError": true, "ConnectionAbortedError": true, "ConnectionRefusedError": true,
	"ConnectionResetError": true, "FileExistsError": true, "FileNotFoundError": true, "InterruptedError": true,
	"IsADirectoryError": true, "NotADirectoryError": true, "PermissionError": true, "ProcessLookupError": true,
	"TimeoutError": true,
}

// exceptionLike tells an exception's repr from another object's by the
// naming convention of exception classes.
func exceptionLike(name string) bool {
	for _, suffix := range []string{"Error", "Exception", "Warning", "Exit", "Interrupt", "Iteration"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func isInt(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

// pyValue is a value read from a Python repr: its source text, and for
// strings the text they hold, for calls (an exception's repr) the name and
// arguments, for tuples their items.
type pyValue struct {
	kind  pyKind
	raw   string
	str   string
	name  string
	items []pyValue
}

type pyKind int

const (
	pyOther pyKind = iota // numbers, None, bytes, lists, dicts, <objects>
	pyString
	pyTuple
	pyCall
)

// pyParser reads the subset of Python's repr output that exception
// arguments produce: str and bytes literals, numbers, names, calls
// (nested exceptions), tuples, lists, dicts, sets and <...> objects.
type pyParser struct {
	s string
	i int
}

var errRepr = errors.New("not a python repr")

// maxReprDepth bounds the nesting the parser follows.
const maxReprDepth = 32

func (p *pyParser) value() (pyValue, error) { return p.valueAt(0) }

func (p *pyParser) valueAt(depth int) (pyValue, error) {
	if depth > maxReprDepth {
		return pyValue{}, errRepr
	}
	p.space()
	if p.i >= len(p.s) {
		return pyValue{}, errRepr
	}
	start := p.i
	c := p.s[p.i]
	switch {
	case c == '\'' || c == '"':
		return p.str(start)
	case (c == 'b' || c == 'B') && p.i+1 < len(p.s) && (p.s[p.i+1] == '\'' || p.s[p.i+1] == '"'):
		p.i++
		if _, err := p.str(start); err != nil {
			return pyValue{}, err
		}
		return pyValue{kind: pyOther, raw: p.s[start:p.i]}, nil
	case c == '(':
		items, err := p.seq(')', depth)
		if err != nil {
			return pyValue{}, err
		}
		return pyValue{kind: pyTuple, raw: p.s[start:p.i], items: items}, nil
	case c == '[':
		if _, err := p.seq(']', depth); err != nil {
			return pyValue{}, err
		}
		return pyValue{kind: pyOther, raw: p.s[start:p.i]}, nil
	case c == '{':
		if err := p.dict(depth); err != nil {
			return pyValue{}, err
		}
		return pyValue{kind: pyOther, raw: p.s[start:p.i]}, nil
	case c == '<':
		if err := p.object(); err != nil {
			return pyValue{}, err
		}
		return pyValue{kind: pyOther, raw: p.s[start:p.i]}, nil
	case c == '-' || c == '+' || c == '.' || c >= '0' && c <= '9':
		p.number()
		if p.i == start {
			return pyValue{}, errRepr
		}
		return pyValue{kind: pyOther, raw: p.s[start:p.i]}, nil
	case isNameStart(c):
		name := p.name()
		p.space()
		if p.i < len(p.s) && p.s[p.i] == '(' {
			items, err := p.seq(')', depth)
			if err != nil {
				return pyValue{}, err
			}
			return pyValue{kind: pyCall, raw: p.s[start:p.i], name: name, items: items}, nil
		}
		return pyValue{kind: pyOther, raw: name}, nil
	}
	return pyValue{}, errRepr
}

// seq reads comma-separated values up to close; the opening bracket is at
// p.i. A call's keyword arguments (name=value) are not something repr of
// an exception gives, and fail the parse.
func (p *pyParser) seq(close byte, depth int) ([]pyValue, error) {
	p.i++ // the opening bracket
	var items []pyValue
	for {
		p.space()
		if p.i < len(p.s) && p.s[p.i] == close {
			p.i++
			return items, nil
		}
		v, err := p.valueAt(depth + 1)
		if err != nil {
			return nil, err
		}
		items = append(items, v)
		p.space()
		if p.i >= len(p.s) {
			return nil, errRepr
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case close:
			p.i++
			return items, nil
		default:
			return nil, errRepr
		}
	}
}

// dict reads a dict or set display: {k: v, ...} or {a, b}.
func (p *pyParser) dict(depth int) error {
	p.i++
	for {
		p.space()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return nil
		}
		if _, err := p.valueAt(depth + 1); err != nil {
			return err
		}
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ':' {
			p.i++
			if _, err := p.valueAt(depth + 1); err != nil {
				return err
			}
			p.space()
		}
		if p.i >= len(p.s) {
			return errRepr
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return errRepr
		}
	}
}

// object skips the default repr of an object, <Name object at 0x...>, with
// nested angle brackets and quoted text.
func (p *pyParser) object() error {
	level := 0
	for p.i < len(p.s) {
		switch c := p.s[p.i]; c {
		case '<':
			level++
		case '>':
			level--
			if level == 0 {
				p.i++
				return nil
			}
		case '\'', '"':
			if _, err := p.str(p.i); err != nil {
				return err
			}
			continue
		}
		p.i++
	}
	return errRepr
}

// str reads a quoted literal whose opening quote is at p.i and decodes the
// escapes repr writes (\\ \' \" \n \r \t \xhh \uhhhh \Uhhhhhhhh, and the
// rarer \a \b \f \v \0).
func (p *pyParser) str(start int) (pyValue, error) {
	quote := p.s[p.i]
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == quote:
			p.i++
			return pyValue{kind: pyString, raw: p.s[start:p.i], str: b.String()}, nil
		case c == '\\':
			if p.i+1 >= len(p.s) {
				return pyValue{}, errRepr
			}
			e := p.s[p.i+1]
			p.i += 2
			switch e {
			case '\\', '\'', '"':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'v':
				b.WriteByte('\v')
			case '0':
				b.WriteByte(0)
			case 'x', 'u', 'U':
				n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if p.i+n > len(p.s) {
					return pyValue{}, errRepr
				}
				r, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
				if err != nil || r > utf8.MaxRune {
					return pyValue{}, errRepr
				}
				b.WriteRune(rune(r))
				p.i += n
			default:
				return pyValue{}, errRepr
			}
		case c == '\n':
			return pyValue{}, errRepr // a repr never holds a raw newline
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return pyValue{}, errRepr
}

// number reads an int, float or complex literal (1, -2.5, 1e-05, -inf,
// 1j) or an ellipsis loosely: digits, letters, dots and an exponent's sign.
func (p *pyParser) number() {
	if p.i < len(p.s) && (p.s[p.i] == '-' || p.s[p.i] == '+') {
		p.i++
	}
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '_':
			p.i++
		case (c == '-' || c == '+') && p.i > 0 && (p.s[p.i-1] == 'e' || p.s[p.i-1] == 'E'):
			p.i++
		default:
			return
		}
	}
}

// name reads a dotted identifier.
func (p *pyParser) name() string {
	start := p.i
	for p.i < len(p.s) && (isNameStart(p.s[p.i]) || p.s[p.i] >= '0' && p.s[p.i] <= '9' || p.s[p.i] == '.') {
		p.i++
	}
	return p.s[start:p.i]
}

func isNameStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func (p *pyParser) space() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}
