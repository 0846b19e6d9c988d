# Publishes the node image built by image/build.sh:
#   AWS: the raw disk -> S3 -> EC2 import -> an AMI (UEFI boot)
#   GCE: the tarball -> GCS -> a Compute Engine image (UEFI, gVNIC)
#
#   packer build -var aws_region=eu-west-1 -var s3_bucket=my-bucket \
#       -var gcp_project=my-project -var gcs_bucket=my-bucket image/packer
#
# `packer validate image/packer` checks it (ci/test.sh does when packer is
# installed). Nothing runs a machine: the image is built already; these
# builds only copy the artefact and hand it to the clouds' import APIs.

variable "image_version" {
  type    = string
  default = "dev"
}

variable "raw_image" {
  type    = string
  default = "build/image/muster.raw"
}

variable "gce_tarball" {
  type    = string
  default = "build/image/muster.gce.tar.gz"
}

variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

variable "s3_bucket" {
  type    = string
  default = "muster-images"
}

variable "gcp_project" {
  type    = string
  default = "muster-images"
}

variable "gcs_bucket" {
  type    = string
  default = "muster-images"
}

source "file" "muster_raw" {
  source = var.raw_image
  target = "build/packer/muster-${var.image_version}.raw"
}

source "file" "muster_gce" {
  source = var.gce_tarball
  target = "build/packer/muster-${var.image_version}.tar.gz"
}

build {
  name    = "aws"
  sources = ["source.file.muster_raw"]

  post-processor "amazon-import" {
    region          = var.aws_region
    s3_bucket_name  = var.s3_bucket
    s3_key_name     = "muster-${var.image_version}.raw"
    format          = "raw"
    ami_name        = "muster-${var.image_version}"
    ami_description = "Muster node image ${var.image_version}: boots into a self-assembling Kubernetes cluster"
    license_type    = "BYOL"
    # Register with --boot-mode uefi --ena-support after import; Packer's
    # importer of this generation cannot set the boot mode (see README.md).
    tags = {
      Name   = "muster-${var.image_version}"
      muster = var.image_version
    }
  }
}

build {
  name    = "gce"
  sources = ["source.file.muster_gce"]

  post-processor "googlecompute-import" {
    project_id              = var.gcp_project
    bucket                  = var.gcs_bucket
    image_name              = "muster-${replace(var.image_version, ".", "-")}"
    image_family            = "muster"
    image_description       = "Muster node image ${var.image_version}"
    image_guest_os_features = ["UEFI_COMPATIBLE", "GVNIC"]
    skip_clean              = false
  }
}
