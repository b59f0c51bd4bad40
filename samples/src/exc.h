// exc.h - API of the `exc` sample (scenario 11, C++ with exceptions).
#ifndef HF_SAMPLES_EXC_H
#define HF_SAMPLES_EXC_H
#include "hf.h"
#include <exception>

class RangeError : public std::exception {
public:
    explicit RangeError(int value) : value_(value) {}
    const char *what() const noexcept override;
    int value() const { return value_; }

private:
    int value_;
};

int checked_lookup(int i);   // scenario 11: throws and catches inside
int lookup_or_throw(int i);  // unchanged: throws to its caller
#endif
