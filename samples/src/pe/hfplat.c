/* hfplat.c - "platform" DLL for the freestanding PE targets.
 *
 * The PE samples have no C runtime, so scenario 10 (a fixed function calling
 * an imported function) imports hfplat_strtoi() from this DLL instead of
 * strtol() from libc.  core.<variant>.dll links against hfplat.lib, so its
 * call goes through the IAT.  Semantics follow strtol() for the bases used:
 * 0 (auto: 0x.. hex, 0.. octal, else decimal), 8, 10 and 16. */
__declspec(dllexport) int hfplat_strtoi(const char *s, int base)
{
    int neg = 0;
    unsigned v = 0;

    while (*s == ' ' || *s == '\t')
        ++s;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        base = 16;
    } else if (base == 0) {
        base = s[0] == '0' ? 8 : 10;
    }
    for (;; ++s) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'z')
            d = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'Z')
            d = *s - 'A' + 10;
        else
            break;
        if (d >= base)
            break;
        v = v * (unsigned)base + (unsigned)d;
    }
    return neg ? -(int)v : (int)v;
}

/* Scenario 20: strspn(), imported only by core.fix20.dll. */
__declspec(dllexport) unsigned long long hfplat_strspn(const char *s, const char *accept)
{
    unsigned long long n = 0;
    for (;; ++n) {
        const char *a = accept;
        while (*a && *a != s[n])
            ++a;
        if (!*a)
            return n;
    }
}
