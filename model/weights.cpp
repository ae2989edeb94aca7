#include "model/weights.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>

#include "common/error.h"
#include "common/json_util.h"
#include "model/quant.h"

namespace cocom::model {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string shape_str(at::IntArrayRef shape) { return shape_str(shape.vec()); }

at::Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t len = n ? static_cast<int64_t>(rows[0].size()) : 0;
  at::Tensor t = at::empty({n, len}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const auto& row = rows[size_t(i)];
    if (static_cast<int64_t>(row.size()) != len) {
      fail("ids_tensor: row ", i, " has ", row.size(), " entries, row 0 has ", len);
    }
    std::copy(row.begin(), row.end(), t[i].data_ptr<int64_t>());
  }
  return t;
}

namespace {
at::Tensor tensor_from_bytes(const TensorInfo& ti, const uint8_t* src, const std::string& file,
                             at::ScalarType target) {
  const std::string& name = ti.name;
  const std::vector<int64_t>& shape = ti.shape;
  const int64_t n = ti.numel();
  auto fail_type = [&]() {
    fail(file, ": tensor '", name, "' has dtype ", dtype_name(ti.dtype),
         ", which cannot be used as ",
         target == at::kFloat ? "a float weight" : "an integer buffer");
  };
  if (target == at::kFloat) {
    at::Tensor out = empty_hugepage(shape, at::kFloat);
    float* dst = out.data_ptr<float>();
    switch (ti.dtype) {
      case DType::F32:
        std::memcpy(dst, src, static_cast<size_t>(n) * 4);
        break;
      case DType::BF16: {
        // bf16 is the upper half of an fp32: widen by shifting (exact).
        widen_bf16(src, dst, n);
        break;
      }
      case DType::F16: {
        at::Tensor half = at::empty(shape, at::kHalf);
        std::memcpy(half.data_ptr(), src, static_cast<size_t>(n) * 2);
        out.copy_(half);
        break;
      }
      case DType::F64: {
        at::Tensor d = at::empty(shape, at::kDouble);
        std::memcpy(d.data_ptr(), src, static_cast<size_t>(n) * 8);
        out.copy_(d);
        break;
      }
      default:
        fail_type();
    }
    return out;
  }
  if (target == at::kLong) {
    at::ScalarType st;
    switch (ti.dtype) {
      case DType::I64:
        st = at::kLong;
        break;
      case DType::I32:
        st = at::kInt;
        break;
      case DType::I16:
        st = at::kShort;
        break;
      case DType::I8:
        st = at::kChar;
        break;
      case DType::U8:
        st = at::kByte;
        break;
      case DType::BOOL:
        st = at::kBool;
        break;
      default:
        fail(file, ": tensor '", name, "' has dtype ", dtype_name(ti.dtype),
             ", which cannot be used as an integer buffer");
    }
    at::Tensor raw = at::empty(shape, st);
    std::memcpy(raw.data_ptr(), src, ti.nbytes());
    return raw.to(at::kLong);
  }
  fail("read_tensor: unsupported target type for '", name, "'");
}
}  // namespace

at::Tensor read_tensor(const CheckpointFiles& files, const std::string& name,
                       at::ScalarType target) {
  return tensor_from_bytes(files.info(name), files.data(name), files.file_of(name), target);
}

at::Tensor read_tensor(const SafetensorsFile& file, const std::string& name,
                       at::ScalarType target) {
  const TensorInfo* ti = file.find(name);
  if (!ti) fail(file.path(), ": no tensor named '", name, "'");
  return tensor_from_bytes(*ti, file.data(*ti), file.path(), target);
}

RandomWeights::RandomWeights(uint64_t seed, double std)
    : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)), std_(std) {}

bool RandomWeights::has(const std::string& name) const {
  // Random models have every parameter except optional extras.
  return name.find("rotary_emb") == std::string::npos &&
         name.find("position_ids") == std::string::npos &&
         name.find(".gamma") == std::string::npos && name.find(".beta") == std::string::npos;
}

at::Tensor RandomWeights::get(const std::string& name, const std::vector<int64_t>& shape,
                              c10::Device device) {
  at::Tensor t;
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  bool is_norm =
      name.find("norm") != std::string::npos || name.find("LayerNorm") != std::string::npos;
  if (ends_with(".bias")) {
    t = at::zeros(shape, at::kFloat);
  } else if (is_norm) {
    t = at::ones(shape, at::kFloat);
  } else {
    t = at::empty(shape, at::kFloat);
    t.normal_(0.0, std_, gen_);
  }
  return device == c10::Device(c10::kCPU) ? t : t.to(device);
}

WeightSource::WeightSource(const CheckpointFiles& files, std::string prefix, LoraSettings lora)
    : files_(files), prefix_(std::move(prefix)), lora_(std::move(lora)) {}

bool WeightSource::has(const std::string& name) const {
  if (files_.has(prefix_ + name)) return true;
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    std::string stem = name.substr(0, name.size() - suffix.size());
    return files_.has(prefix_ + stem + ".base_layer.weight");
  }
  return false;
}

void WeightSource::ignore(const std::string& name) {
  if (files_.has(prefix_ + name)) used_.insert(prefix_ + name);
}

double WeightSource::lora_scale(const std::string& full_name, int64_t r) {
  if (lora_.alpha) return *lora_.alpha / static_cast<double>(lora_.r.value_or(r));
  if (!adapter_config_read_) {
    adapter_config_read_ = true;
    std::string path = join_path(files_.dir(), "adapter_config.json");
    if (file_exists(path)) {
      Json j = read_json_file(path);
      adapter_alpha_ = json_number_or(j, "lora_alpha", 0.0, path);
      int64_t cfg_r = json_int_or(j, "r", r, path);
      if (cfg_r != r) {
        fail(path, ": r = ", cfg_r, " but tensor '", full_name, "' has rank ", r);
      }
    }
  }
  if (!adapter_alpha_) {
    fail(files_.file_of(full_name), ": tensor '", full_name,
         "' is a LoRA adapter but no lora_alpha is known (no adapter_config.json in ", files_.dir(),
         " and none given by the model config)");
  }
  return *adapter_alpha_ / static_cast<double>(r);
}

at::Tensor WeightSource::get(const std::string& name, const std::vector<int64_t>& shape,
                             c10::Device device) {
  const std::string full = prefix_ + name;
  at::Tensor w;
  std::string where;
  if (files_.has(full)) {
    dtypes_.insert(dtype_name(files_.info(full).dtype));
    w = read_tensor(files_, full);
    files_.release(full);
    used_.insert(full);
    where = files_.file_of(full);
  } else {
    const std::string suffix = ".weight";
    bool is_weight = name.size() > suffix.size() &&
                     name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    std::string stem = is_weight ? full.substr(0, full.size() - suffix.size()) : full;
    std::string base = stem + ".base_layer.weight";
    if (!is_weight || !files_.has(base)) {
      fail(files_.dir(), ": missing tensor '", full, "' (expected shape ", shape_str(shape), ")");
    }
    dtypes_.insert(dtype_name(files_.info(base).dtype));
    w = read_tensor(files_, base);
    files_.release(base);
    used_.insert(base);
    where = files_.file_of(base);
    std::string a_name = stem + ".lora_A." + lora_.adapter + ".weight";
    std::string b_name = stem + ".lora_B." + lora_.adapter + ".weight";
    bool has_a = files_.has(a_name), has_b = files_.has(b_name);
    if (has_a != has_b) {
      fail(files_.dir(), ": LoRA adapter for '", stem, "' is incomplete: '",
           has_a ? b_name : a_name, "' is missing");
    }
    if (has_a) {
      at::Tensor a = read_tensor(files_, a_name);
      at::Tensor b = read_tensor(files_, b_name);
      files_.release(a_name);
      files_.release(b_name);
      used_.insert(a_name);
      used_.insert(b_name);
      if (a.dim() != 2 || b.dim() != 2 || w.dim() != 2 || b.size(1) != a.size(0) ||
          b.size(0) != w.size(0) || a.size(1) != w.size(1)) {
        fail(files_.file_of(a_name), ": LoRA shapes do not fit '", base, "' ", shape_str(w.sizes()),
             ": lora_A ", shape_str(a.sizes()), ", lora_B ", shape_str(b.sizes()),
             " (expected lora_A [r,in], lora_B [out,r])");
      }
      double scale = lora_scale(a_name, a.size(0));
      if (lora_.merge) {
        w.addmm_(b, a, 1.0, scale);  // in place: no second full-size matrix
        ++lora_merged_;
      } else {
        StoredLoraAdapter& ad = adapters_[stem.substr(prefix_.size())];
        ad.a = device != c10::Device(c10::kCPU) ? a.to(device) : a;
        ad.b = device != c10::Device(c10::kCPU) ? b.to(device) : b;
        ad.scale = scale;
      }
    }
  }
  if (w.sizes().vec() != shape) {
    fail(where, ": tensor '", full, "' has shape ", shape_str(w.sizes()),
         " but the config implies ", shape_str(shape));
  }
  if (device != c10::Device(c10::kCPU)) w = w.to(device);
  return w;
}

void WeightSource::check_all_used(const std::vector<std::string>& ignorable_prefixes) const {
  std::vector<std::string> extra;
  for (const auto& n : files_.names()) {
    if (n.compare(0, prefix_.size(), prefix_) != 0) continue;
    if (used_.count(n)) continue;
    std::string rel = n.substr(prefix_.size());
    bool skip = false;
    for (const auto& p : ignorable_prefixes) skip = skip || rel.compare(0, p.size(), p) == 0;
    if (!skip) extra.push_back(n);
  }
  if (!extra.empty()) {
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", '" : "'") + extra[i] + "'";
    if (extra.size() > 5) list += ", ... (" + std::to_string(extra.size()) + " in all)";
    fail(files_.dir(), ": unexpected tensor(s) not used by the model: ", list,
         " (does config.json match the weights?)");
  }
}

}  // namespace cocom::model
