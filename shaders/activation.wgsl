// shaders/activation.wgsl — the nine activations, by code (src/gpu/mod.rs `activation_code`):
// 0 ReLU, 1 SiLU, 2 GELU (tanh form), 3 GELU (exact, erf), 4 tanh, 5 sigmoid, 6 leaky ReLU
// (slope 0.01), 7 ReLU², 8 linear. Written to stay finite for any finite input (no exp overflow,
// no inf/inf), with absolute errors around 1e-7.

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;

fn sigmoid_f(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(min(-v, 88.0)));
}

fn tanh_f(v: f32) -> f32 {
    let a = abs(v);
    if (a < 0.004) {
        return v - v * v * v / 3.0;
    }
    let e = exp(-2.0 * a);
    return sign(v) * (1.0 - e) / (1.0 + e);
}

// erf on |t| < 0.84375 and erfc on t ≥ 0.84375: FreeBSD's s_erff.c (as in musl and Rust's
// libm), accurate to about one f32 ulp.
fn erf_small(t: f32) -> f32 {
    let z = t * t;
    let r = 1.2837916613e-01 + z * (-3.2504209876e-01 + z * (-2.8481749818e-02
        + z * (-5.7702702470e-03 + z * -2.3763017452e-05)));
    let s = 1.0 + z * (3.9791721106e-01 + z * (6.5022252500e-02 + z * (5.0813062117e-03
        + z * (1.3249473704e-04 + z * -3.9602282413e-06))));
    return t + t * (r / s);
}

fn erfc_large(t: f32) -> f32 {
    if (t < 1.25) {
        let s = t - 1.0;
        let p = -2.3621185683e-03 + s * (4.1485610604e-01 + s * (-3.7220788002e-01
            + s * (3.1834661961e-01 + s * (-1.1089469492e-01 + s * (3.5478305072e-02
            + s * -2.1663755178e-03)))));
        let q = 1.0 + s * (1.0642088205e-01 + s * (5.4039794207e-01 + s * (7.1828655899e-02
            + s * (1.2617121637e-01 + s * (1.3637083583e-02 + s * 1.1984500103e-02)))));
        return 1.0 - 8.4506291151e-01 - p / q;
    }
    if (t >= 10.0) {
        return 0.0;
    }
    let s = 1.0 / (t * t);
    var r: f32;
    var d: f32;
    if (t < 2.857142857) {
        r = -9.8649440333e-03 + s * (-6.9385856390e-01 + s * (-1.0558626175e+01
            + s * (-6.2375331879e+01 + s * (-1.6239666748e+02 + s * (-1.8460508728e+02
            + s * (-8.1287437439e+01 + s * -9.8143291473e+00))))));
        d = 1.0 + s * (1.9651271820e+01 + s * (1.3765776062e+02 + s * (4.3456588745e+02
            + s * (6.4538726807e+02 + s * (4.2900814819e+02 + s * (1.0863500214e+02
            + s * (6.5702495575e+00 + s * -6.0424413532e-02)))))));
    } else {
        r = -9.8649431020e-03 + s * (-7.9928326607e-01 + s * (-1.7757955551e+01
            + s * (-1.6063638306e+02 + s * (-6.3756646729e+02 + s * (-1.0250950928e+03
            + s * -4.8351919556e+02)))));
        d = 1.0 + s * (3.0338060379e+01 + s * (3.2579251099e+02 + s * (1.5367296143e+03
            + s * (3.1998581543e+03 + s * (2.5530502930e+03 + s * (4.7452853394e+02
            + s * -2.2440952301e+01))))));
    }
    // z = t with the low 13 mantissa bits cleared, so z·z is exact.
    let z = bitcast<f32>(bitcast<u32>(t) & 0xffffe000u);
    return exp(-z * z - 0.5625) * exp((z - t) * (z + t) + r / d) / t;
}

// Φ(v) = (1 + erf(v/√2)) / 2, through erfc on the far side so the tail keeps its precision.
fn normal_cdf(v: f32) -> f32 {
    let t = v * FRAC_1_SQRT_2;
    let a = abs(t);
    if (a < 0.84375) {
        return 0.5 + 0.5 * erf_small(t);
    }
    let c = erfc_large(a);
    return select(0.5 * c, 1.0 - 0.5 * c, t > 0.0);
}

fn activate(v: f32, code: u32) -> f32 {
    switch code {
        case 0u: {
            return max(v, 0.0);
        }
        case 1u: {
            return v * sigmoid_f(v);
        }
        case 2u: {
            return 0.5 * v * (1.0 + tanh_f(SQRT_2_OVER_PI * (v + GELU_C * v * v * v)));
        }
        case 3u: {
            return v * normal_cdf(v);
        }
        case 4u: {
            return tanh_f(v);
        }
        case 5u: {
            return sigmoid_f(v);
        }
        case 6u: {
            return select(0.01 * v, v, v >= 0.0);
        }
        case 7u: {
            let r = max(v, 0.0);
            return r * r;
        }
        default: {
            return v;
        }
    }
}
